"""The tf.data input functions: decoding stored bytes, normalising, training-only augmentation."""
from __future__ import annotations

import numpy as np
import pytest

from hitpredict.train.inputs import model_inputs
from hitpredict.train.plan import Augmentation, Normalisation

N_MELS, FRAMES = 8, 40


def stored(n=4, seed=0):
    rng = np.random.default_rng(seed)
    mels = rng.normal(-30, 6, (n, N_MELS, FRAMES)).astype(np.float16)
    return mels, np.array([m.tobytes() for m in mels], dtype=object), rng.normal(0, 1, (n, 3)).astype(np.float32)


NORM = Normalisation(mel_mean=list(np.linspace(-35, -25, N_MELS)), mel_std=[6.0] * N_MELS,
                     summary_mean=[1.0, 0.0, -1.0], summary_std=[2.0, 1.0, 0.0])


def test_decode_and_normalise_match_numpy():
    mels, raw, summary = stored()
    out = model_inputs(raw, summary, ("mel", "summary"), N_MELS, FRAMES, NORM)
    expected = (mels.astype(np.float32) - np.asarray(NORM.mel_mean, np.float32)[None, :, None]) / 6.0
    assert out["mel"].shape == (4, N_MELS, FRAMES, 1)
    assert np.allclose(out["mel"].numpy()[..., 0], expected, atol=1e-5)
    # a zero std (a constant summary dimension) is floored, never a division by zero
    assert np.isfinite(out["summary"].numpy()).all()
    assert np.allclose(out["summary"].numpy()[:, 0], (summary[:, 0] - 1.0) / 2.0, atol=1e-6)


def test_only_the_inputs_a_model_reads_are_built():
    _, raw, summary = stored()
    assert set(model_inputs(raw, summary, ("summary",), N_MELS, FRAMES, NORM)) == {"summary"}


def test_augmentation_crops_shifts_gain_and_masks_time():
    mels, raw, summary = stored(n=16)
    plain = model_inputs(raw, summary, ("mel",), N_MELS, FRAMES, NORM)["mel"].numpy()[..., 0]
    cropped = model_inputs(raw, summary, ("mel",), N_MELS, FRAMES, NORM, Augmentation(crop_frames=10), seed=3)
    window = cropped["mel"].numpy()[..., 0]
    assert window.shape == (16, N_MELS, 10)
    starts = [s for s in range(FRAMES - 9) if np.allclose(plain[:, :, s:s + 10], window, atol=1e-5)]
    assert len(starts) == 1  # one window of the original, the same for the whole batch

    gained = model_inputs(raw, summary, ("mel",), N_MELS, FRAMES, NORM, Augmentation(gain_db=6.0), seed=3)
    shift = (gained["mel"].numpy()[..., 0] - plain) * 6.0  # back to dB
    per_clip = shift.reshape(16, -1)
    assert np.allclose(per_clip, per_clip[:, :1], atol=1e-3)  # one gain per clip, over all bands and frames
    assert np.abs(per_clip[:, 0]).max() <= 6.0 + 1e-3 and np.ptp(per_clip[:, 0]) > 0.5

    masked = model_inputs(raw, summary, ("mel",), N_MELS, FRAMES, NORM,
                          Augmentation(time_masks=2, time_mask_frames=8), seed=3)["mel"].numpy()[..., 0]
    zero_frames = np.all(masked == 0, axis=1)  # (clips, frames): whole frames set to the mean
    assert zero_frames.any() and zero_frames.sum(axis=1).max() <= 16
    assert np.allclose(masked[~np.broadcast_to(zero_frames[:, None, :], masked.shape)],
                       plain[~np.broadcast_to(zero_frames[:, None, :], plain.shape)], atol=1e-5)


def test_augmentation_runs_inside_a_tf_data_pipeline():
    """Training applies it in graph mode (tf.data.map), where shapes are unknown."""
    import tensorflow as tf

    _, raw, summary = stored(n=12)
    augment = Augmentation(crop_frames=16, gain_db=3.0, time_masks=2, time_mask_frames=4)
    data = tf.data.Dataset.from_tensor_slices((raw.astype(bytes), summary)).batch(5).map(
        lambda r, s: model_inputs(r, s, ("mel", "summary"), N_MELS, FRAMES, NORM, augment, seed=1))
    shapes = [tuple(batch["mel"].shape) for batch in data]
    assert shapes == [(5, N_MELS, 16, 1), (5, N_MELS, 16, 1), (2, N_MELS, 16, 1)]


def test_every_family_saves_and_reloads_as_a_bundle(tmp_path):
    """Families with Lambda layers (dummy, crnn, inception) must survive save and load too."""
    from hitpredict.models import FAMILIES, ModelSpec, build_model, input_names
    from hitpredict.train.bundle import ModelBundle

    spec = ModelSpec("binary", n_mels=N_MELS, frames=FRAMES, summary_size=3)
    _, raw, summary = stored(n=3)
    for family in [f for f in FAMILIES if set(input_names(f)) <= {"mel", "summary"}]:   # embed, fusion: below
        bundle = ModelBundle(family=family, spec=spec, target="popular", audio={"n_mels": N_MELS}, norm=NORM,
                             inputs=input_names(family), dataset_id="ds-x", threshold=39.0,
                             label_names=["not_popular", "popular"], model=build_model(family, spec))
        before = bundle.predict(list(raw), summary.tolist())
        again = ModelBundle.load(bundle.save(tmp_path / family))
        assert again.family == family and again.threshold == 39.0 and again.norm == NORM
        assert np.array_equal(again.predict(list(raw), summary.tolist()), before)


# --------------------------------------------------------------------------- embedding and tags


EMBEDDING, TAGS = 6, 4
WITH_VECTORS = Normalisation(**{**NORM.__dict__, "embedding_mean": [0.5] * EMBEDDING,
                                "embedding_std": [2.0] * EMBEDDING, "tags_mean": [0.1, 0.2, 0.3, 0.4],
                                "tags_std": [0.1, 0.0, 0.2, 0.5]})


def vectors(n=4, seed=1):
    rng = np.random.default_rng(seed)
    return {"embedding": rng.normal(0, 1, (n, EMBEDDING)).astype(np.float32),
            "tags": rng.uniform(0, 1, (n, TAGS)).astype(np.float32)}


def test_embedding_and_tags_are_standardised_with_the_training_statistics():
    _, raw, summary = stored()
    given = vectors()
    out = model_inputs(raw, summary, ("embedding", "summary", "tags"), N_MELS, FRAMES, WITH_VECTORS, vectors=given)
    assert set(out) == {"embedding", "summary", "tags"}
    np.testing.assert_allclose(out["embedding"].numpy(), (given["embedding"] - 0.5) / 2.0, atol=1e-6)
    np.testing.assert_allclose(out["tags"].numpy(), (given["tags"] - [0.1, 0.2, 0.3, 0.4]) / [0.1, 1e-3, 0.2, 0.5],
                               rtol=1e-5)   # a zero std is floored like the summary's
    assert set(model_inputs(raw, summary, ("mel",), N_MELS, FRAMES, WITH_VECTORS, vectors=given)) == {"mel"}


def test_missing_vectors_or_statistics_are_named():
    import pytest

    _, raw, summary = stored()
    with pytest.raises(ValueError, match=r"the model reads 'embedding', but no embedding vectors were given"):
        model_inputs(raw, summary, ("embedding", "summary"), N_MELS, FRAMES, WITH_VECTORS)
    with pytest.raises(ValueError, match=r"the model reads 'tags' but its normalisation has no tags statistics"):
        model_inputs(raw, summary, ("mel", "tags"), N_MELS, FRAMES, NORM, vectors=vectors())
    short = {"embedding": vectors()["embedding"][:, :5]}
    with pytest.raises(ValueError, match=r"'embedding' vectors have 5 values, the model's statistics 6"):
        model_inputs(raw, summary, ("embedding", "summary"), N_MELS, FRAMES, WITH_VECTORS, vectors=short)


def test_vector_statistics_are_optional_in_old_datasets_rows_and_bundles():
    """A datasets row or bundle.json from before embeddings has no embedding or tags statistics."""
    import dataclasses
    import json

    from hitpredict.models import ModelSpec

    record = {"mel_mean": [0.0], "mel_std": [1.0], "summary_mean": [0.0], "summary_std": [1.0]}
    assert Normalisation.from_record(record).embedding_mean == []
    assert Normalisation.from_record({**record, "embedding_mean": None}).embedding_mean == []
    assert Normalisation(**{"mel_mean": [0.0], "mel_std": [1.0], "summary_mean": [0.0], "summary_std": [1.0]}) \
        == Normalisation.from_record(record)
    spec = ModelSpec("binary", embedding_size=6, tags_size=4, fusion_branches=("tags",))
    assert ModelSpec(**json.loads(json.dumps(dataclasses.asdict(spec)))) == spec   # as bundle.json stores it


def test_embed_and_fusion_save_and_reload_as_bundles(tmp_path):
    """Needs ModelBundle.predict(..., vectors=...), which passes the vectors on to model_inputs."""
    from hitpredict.models import ModelSpec, build_model, input_names
    from hitpredict.train.bundle import BundleError, ModelBundle

    _, raw, summary = stored(n=3)
    given = vectors(n=3)
    for family, branches, units in (("embed", ("mel", "tags"), (128, 64)), ("embed", ("mel", "tags"), ()),
                                    ("fusion", ("mel", "tags"), (128, 64)), ("fusion", ("tags",), (128, 64))):
        spec = ModelSpec("binary", n_mels=N_MELS, frames=FRAMES, summary_size=3, embedding_size=EMBEDDING,
                         tags_size=TAGS, fusion_branches=branches, embed_units=units)
        bundle = ModelBundle(family=family, spec=spec, target="popular", audio={"n_mels": N_MELS}, norm=WITH_VECTORS,
                             inputs=input_names(family, spec), dataset_id="ds-x", threshold=39.0,
                             label_names=["not_popular", "popular"], model=build_model(family, spec))
        stored_vectors = {name: [list(map(float, v)) for v in values] for name, values in given.items()}
        before = bundle.predict(list(raw), summary.tolist(), vectors=stored_vectors)
        again = ModelBundle.load(bundle.save(tmp_path / f"{family}-{len(branches)}-{len(units)}"))
        assert again.norm == WITH_VECTORS and again.spec == spec and again.inputs == bundle.inputs
        assert np.array_equal(again.predict(list(raw), summary.tolist(), vectors=stored_vectors), before)
        # a track without the vectors the model reads is refused, never scored with a made-up vector
        name = "embedding" if family == "embed" else "tags"
        missing = {**stored_vectors, name: [stored_vectors[name][0], None, stored_vectors[name][2]]}
        with pytest.raises(BundleError, match=f"a track without {name}"):
            again.predict(list(raw), summary.tolist(), vectors=missing)


def test_the_train_config_chooses_the_embed_head():
    """``train.embed_*`` reach the plan's spec (an empty ``embed_units`` from ``--set``: a linear head)."""
    import pandas as pd

    from hitpredict.config import load_config
    from hitpredict.stages import train_model

    record = {"dataset_id": "ds-x", "target": "artist", "mel_shape": [N_MELS, FRAMES], "label_names": ["a", "b", "c"],
              "mel_mean": [0.0] * N_MELS, "mel_std": [1.0] * N_MELS, "summary_mean": [0.0] * 3,
              "summary_std": [1.0] * 3, "embedding_mean": [0.0] * EMBEDDING, "embedding_std": [1.0] * EMBEDDING}
    keys = pd.DataFrame({"split": ["train"] * 6 + ["validation"] * 3, "label": [0, 1, 2] * 3})
    shipped = train_model.make_plan(load_config(None, [], environ={}), record, keys, 1, "embed", None, None).spec
    assert (shipped.embed_units, shipped.embed_dropout, shipped.embed_l2) == ((128, 64), 0.3, 0.0)
    config = load_config(None, ["train.embed_units=[]", "train.embed_input_dropout=0.5", "train.embed_l2=0.01"],
                         environ={})
    spec = train_model.make_plan(config, record, keys, 1, "embed", None, None).spec
    assert (spec.embed_units, spec.embed_input_dropout, spec.embed_l2) == ((), 0.5, 0.01)
    assert spec.embedding_size == EMBEDDING and spec.n_classes == 3
    with pytest.raises(Exception, match="embed_units"):
        load_config(None, ["train.embed_units=[64, 0]"], environ={})
