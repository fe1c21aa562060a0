"""The model zoo: every family builds with every head, trains a step and predicts the right shape."""
from __future__ import annotations

import numpy as np
import pytest

from hitpredict.keras_compat import keras
from hitpredict.models import FAMILIES, ModelSpec, build_model, input_names
from hitpredict.models.heads import loss_and_metrics

SPECS = {
    "binary": ModelSpec("binary", n_mels=32, frames=40, summary_size=6, embedding_size=12, tags_size=5),
    "regression": ModelSpec("regression", n_mels=32, frames=40, summary_size=6, embedding_size=12, tags_size=5),
    "multiclass": ModelSpec("multiclass", n_mels=32, frames=40, summary_size=6, n_classes=4, embedding_size=12,
                            tags_size=5),
}


def batch(spec: ModelSpec, n: int = 8):
    rng = np.random.default_rng(0)
    inputs = {"mel": rng.normal(size=(n, spec.n_mels, spec.frames, 1)).astype("float32"),
              "summary": rng.normal(size=(n, spec.summary_size)).astype("float32"),
              "embedding": rng.normal(size=(n, spec.embedding_size)).astype("float32"),
              "tags": rng.normal(size=(n, spec.tags_size)).astype("float32")}
    labels = {"binary": rng.integers(0, 2, n), "regression": rng.normal(50, 10, n),
              "multiclass": rng.integers(0, spec.n_classes, n)}[spec.task].astype("float32")
    return inputs, labels


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", list(SPECS))
def test_every_family_and_head_trains_and_predicts(family, task):
    spec = SPECS[task]
    model = build_model(family, spec)
    assert tuple(model.input_names) == input_names(family, spec)
    loss, metrics = loss_and_metrics(spec)
    model.compile(optimizer=keras().optimizers.Adam(1e-3), loss=loss, metrics=metrics)
    inputs, labels = batch(spec)
    feed = {name: inputs[name] for name in model.input_names}
    history = model.fit(feed, labels, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    out = model.predict(feed, verbose=0)
    assert out.shape == (8, spec.n_classes if task == "multiclass" else 1)
    if task == "multiclass":
        assert np.allclose(out.sum(axis=1), 1, atol=1e-5)
    if task == "binary":
        assert ((out >= 0) & (out <= 1)).all()


def test_dummy_learns_only_the_prior():
    spec = SPECS["binary"]
    model = build_model("dummy", spec)
    model.compile(optimizer=keras().optimizers.Adam(0.1), loss="binary_crossentropy")
    inputs, _ = batch(spec, 64)
    labels = (np.arange(64) % 4 == 0).astype("float32")  # prior 0.25
    model.fit({"summary": inputs["summary"]}, labels, epochs=60, batch_size=64, verbose=0)
    out = model.predict({"summary": inputs["summary"]}, verbose=0)
    assert np.ptp(out) < 1e-6 and out[0, 0] == pytest.approx(0.25, abs=0.05)


def test_same_seed_same_initial_weights():
    a = build_model("cnn", SPECS["binary"]).get_weights()
    b = build_model("cnn", SPECS["binary"]).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="unknown model family 'transformer'; known: dummy, logreg"):
        build_model("transformer", SPECS["binary"])


@pytest.mark.parametrize("family", ["cnn", "crnn", "inception"])
def test_occlusion_recomputed_around_each_segment_equals_full_passes(family):
    """The time-local shortcut (TIME_LOCAL_TRUNKS) gives the numbers of one full pass per occluded copy,
    and no track's numbers depend on the tracks that share its batches."""
    from hitpredict.audio_params import AudioParams
    from hitpredict.models import TIME_LOCAL_TRUNKS
    from hitpredict.scoring.scorer import segment_bounds
    from hitpredict.train.bundle import ModelBundle
    from hitpredict.train.plan import Normalisation

    params = AudioParams(clip_seconds=6.0, n_mels=64)
    spec = ModelSpec("binary", n_mels=64, frames=params.frames, summary_size=4, seed=5)
    model = build_model(family, spec)
    rng = np.random.default_rng(1)
    for layer in model.layers:   # batch norm statistics far from the identity, so the splice must be exact
        if layer.name.endswith("_bn"):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, rng.normal(0, 0.5, mean.shape).astype("float32"),
                               rng.uniform(0.5, 2.0, var.shape).astype("float32")])
    bundle = ModelBundle(family, spec, "popular", {}, Normalisation([-30.0] * 64, [12.0] * 64, [0.0] * 4, [1.0] * 4),
                         ("mel",), "test", model=model)
    mel = [rng.normal(-30, 12, (64, params.frames)).astype(np.float16).tobytes() for _ in range(5)]
    summary = [[0.0] * 4] * 5
    segments = segment_bounds(params, 1.0)
    assert family in TIME_LOCAL_TRUNKS and len(segments) == 6
    local = bundle.predict_occluded(mel, summary, segments)
    full = bundle.predict_occluded(mel, summary, segments, local=False)
    np.testing.assert_allclose(local, full, rtol=0, atol=1e-6)
    assert np.abs(full[:, :1] - full[:, 1:]).max() > 1e-4        # the occlusions do change the score
    alone = bundle.predict_occluded(mel[3:4], summary[3:4], segments)
    np.testing.assert_array_equal(alone[0], local[3])


# --------------------------------------------------------------------------- embed and fusion


def test_embed_and_fusion_read_their_vectors_and_refuse_a_spec_without_them():
    assert input_names("embed") == ("embedding", "summary")
    assert input_names("fusion") == ("mel", "tags")
    assert input_names("fusion", ModelSpec("binary", fusion_branches=["tags"])) == ("tags",)
    with pytest.raises(ValueError, match="the embed family needs an embedding: spec.embedding_size is 0"):
        build_model("embed", ModelSpec("binary", n_mels=32, summary_size=6))
    with pytest.raises(ValueError, match="the fusion family's tags branch needs tag probabilities"):
        build_model("fusion", ModelSpec("binary", n_mels=32, summary_size=6))
    with pytest.raises(ValueError, match=r"fusion_branches must be one or both of mel, tags, got \['chroma'\]"):
        ModelSpec("binary", fusion_branches=("chroma",))
    with pytest.raises(ValueError, match=r"got \[\]"):
        ModelSpec("binary", fusion_branches=())


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_embed_head_settings_shape_the_model_and_travel_in_the_spec(task):
    """No units: a linear model (the concatenated inputs straight into the head); units: one ReLU layer each;
    input dropout and the L2 penalty appear as layers and losses; the settings survive the bundle's JSON."""
    import json
    from dataclasses import asdict, replace

    linear = replace(SPECS[task], embed_units=[], embed_input_dropout=0.5, embed_l2=1e-2)
    model = build_model("embed", linear)
    dense = [layer for layer in model.layers if isinstance(layer, keras().layers.Dense)]
    assert [layer.name for layer in dense] == ["probs" if task == "multiclass" else "prob"]
    assert dense[0].kernel.shape == (linear.embedding_size + linear.summary_size, 4 if task == "multiclass" else 1)
    assert "input_dropout" in [layer.name for layer in model.layers]
    inputs, _ = batch(linear)
    model({name: inputs[name] for name in model.input_names})
    penalty = float(sum(model.losses))
    assert penalty == pytest.approx(1e-2 * float(np.sum(dense[0].kernel.numpy() ** 2)), rel=1e-5)

    mlp = replace(SPECS[task], embed_units=(32, 16, 8), embed_dropout=0.1)
    widths = [layer.units for layer in build_model("embed", mlp).layers if isinstance(layer, keras().layers.Dense)]
    assert widths[:-1] == [32, 16, 8]
    assert not build_model("embed", mlp).losses
    assert ModelSpec(**json.loads(json.dumps(asdict(linear)))) == linear
    for bad in ({"embed_units": [0]}, {"embed_dropout": 1.0}, {"embed_input_dropout": -0.1}, {"embed_l2": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            replace(SPECS[task], **bad)


@pytest.mark.parametrize("branches", [("mel",), ("tags",)])
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_fusion_with_one_branch_dropped_reads_only_the_other(branches, task):
    from dataclasses import replace

    from hitpredict.models.fusion import WEIGHT_LAYER

    spec = replace(SPECS[task], fusion_branches=branches)
    model = build_model("fusion", spec)
    assert tuple(model.input_names) == branches
    assert WEIGHT_LAYER not in [layer.name for layer in model.layers]
    has_mel_branch = any(layer.name.startswith("span_w") for layer in model.layers)
    assert has_mel_branch == ("mel" in branches)
    inputs, labels = batch(spec)
    model.compile(optimizer=keras().optimizers.Adam(1e-3), loss=loss_and_metrics(spec)[0])
    feed = {name: inputs[name] for name in branches}
    model.fit(feed, labels, epochs=1, batch_size=4, verbose=0)
    out = model.predict(feed, verbose=0)
    assert out.shape == (8, 4 if task == "multiclass" else 1)


def test_fusion_mixes_its_branches_by_a_weight_it_learns():
    """Each branch has its own logits; the output is the activation of sigmoid(g) * mel + (1 - sigmoid(g)) * tags,
    and g trains: with the label in the tags and none in the spectrogram, the weight moves towards the tags."""
    from hitpredict.models.fusion import WEIGHT_LAYER, mel_weight

    spec = SPECS["binary"]
    model = build_model("fusion", spec)
    gate = model.get_layer(WEIGHT_LAYER)
    assert [w.name.split("/")[-1].split(":")[0] for w in gate.trainable_weights] == ["gate"]
    assert mel_weight(model) == pytest.approx(0.5)
    inputs, _ = batch(spec, 64)
    inputs["mel"] = np.zeros_like(inputs["mel"])                                # silence: no label in it
    labels = (inputs["tags"][:, 0] > 0).astype("float32")                       # the label is in one tag
    parts = keras().Model(model.inputs, [model.get_layer("mel_logits").output, model.get_layer("tags_logits").output])
    mel_logit, tags_logit = (np.asarray(t) for t in parts({"mel": inputs["mel"], "tags": inputs["tags"]}))
    w = mel_weight(model)
    expected = 1 / (1 + np.exp(-(w * mel_logit + (1 - w) * tags_logit)))
    np.testing.assert_allclose(model.predict({"mel": inputs["mel"], "tags": inputs["tags"]}, verbose=0), expected,
                               atol=1e-5)
    model.compile(optimizer=keras().optimizers.Adam(0.03), loss="binary_crossentropy")
    model.fit({"mel": inputs["mel"], "tags": inputs["tags"]}, labels, epochs=30, batch_size=16, verbose=0)
    assert mel_weight(model) < 0.35, mel_weight(model)   # 0.22 measured; it starts at 0.5
    with pytest.raises(ValueError, match="has no fusion_weight layer"):
        mel_weight(build_model("fusion", ModelSpec("binary", tags_size=5, fusion_branches=("tags",))))


@pytest.mark.parametrize("task", list(SPECS))
def test_fusion_ends_in_the_heads_output_layer_and_branch_logits(task):
    """Each fusion branch ends in the head's units before activation (models.heads.head_logits) and the mix goes
    through the head's activation, in a layer named as every other family's head."""
    spec = SPECS[task]
    fusion, mlp = build_model("fusion", spec), build_model("mlp", spec)
    head, out = mlp.layers[-1].get_config(), fusion.layers[-1].get_config()
    assert (out["name"], out["activation"]) == (head["name"], head["activation"])   # prob / value / probs
    for name, seed in (("mel_logits", spec.seed), ("tags_logits", spec.seed + 8)):
        logits = fusion.get_layer(name).get_config()
        assert logits["units"] == head["units"] and logits["activation"] == "linear"
        assert logits["kernel_initializer"] == {**head["kernel_initializer"], "config": {"seed": seed}}


def test_windowed_fusion_repeats_the_tags_for_every_window():
    """A whole-clip fusion prediction is the weighted mean of the window logits of (mel window, the clip's tags)."""
    from dataclasses import replace

    from hitpredict.models.windows import aggregate_windows, inner_model, window_layout

    spec = replace(SPECS["binary"], window_frames=16, window_hop=8)
    model = build_model("fusion", spec)
    assert tuple(model.input_names) == ("mel", "tags")
    inputs, _ = batch(spec, 3)
    whole = model.predict({"mel": inputs["mel"], "tags": inputs["tags"]}, verbose=0)
    starts, size, weights = window_layout(spec.frames, 16, 8)
    inner = inner_model(model)
    per_window = np.stack([inner.predict({"mel": inputs["mel"][:, :, s:s + size], "tags": inputs["tags"]}, verbose=0)
                           for s in starts], axis=1)
    np.testing.assert_allclose(whole, np.asarray(aggregate_windows(per_window, "binary", weights)), atol=1e-5)
