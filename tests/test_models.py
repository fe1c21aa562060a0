"""The model zoo: every family builds with every head, trains a step and predicts the right shape."""
from __future__ import annotations

import numpy as np
import pytest

from hitpredict.keras_compat import keras
from hitpredict.models import FAMILIES, ModelSpec, build_model
from hitpredict.models.heads import loss_and_metrics

SPECS = {
    "binary": ModelSpec("binary", n_mels=32, frames=40, summary_size=6),
    "regression": ModelSpec("regression", n_mels=32, frames=40, summary_size=6),
    "multiclass": ModelSpec("multiclass", n_mels=32, frames=40, summary_size=6, n_classes=4),
}


def batch(spec: ModelSpec, n: int = 8):
    rng = np.random.default_rng(0)
    inputs = {"mel": rng.normal(size=(n, spec.n_mels, spec.frames, 1)).astype("float32"),
              "summary": rng.normal(size=(n, spec.summary_size)).astype("float32")}
    labels = {"binary": rng.integers(0, 2, n), "regression": rng.normal(50, 10, n),
              "multiclass": rng.integers(0, spec.n_classes, n)}[spec.task].astype("float32")
    return inputs, labels


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", list(SPECS))
def test_every_family_and_head_trains_and_predicts(family, task):
    spec = SPECS[task]
    model = build_model(family, spec)
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
