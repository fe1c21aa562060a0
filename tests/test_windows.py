"""Whole-clip predictions from windows (hitpredict.models.windows): one definition, two users that agree.

The Keras model that training fits and validates (``build_model`` with a window length) and the bundle's
prediction path (every window through the inner model, occluded copies recomputing only the windows
their segment touches) give the same numbers; every frame of a clip is in some window; a crop-length
input is exactly one window, so what training fits is what scoring runs.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from hitpredict.keras_compat import ensure_keras2
from hitpredict.models import ModelSpec, build_model, input_names, windowed
from hitpredict.models.windows import inner_model, window_layout
from hitpredict.train.bundle import BUNDLE_FILE, BundleError, ModelBundle
from hitpredict.train.plan import Normalisation

ensure_keras2()
N_MELS, FRAMES, WINDOW = 16, 300, 64


@pytest.mark.parametrize("frames, window, hop", [(1292, 256, 128), (300, 64, 32), (65, 64, 32), (64, 64, 32),
                                                 (40, 64, 32), (1000, 100, 100), (1001, 100, 37)])
def test_windows_cover_every_frame_and_end_at_the_clip_end(frames, window, hop):
    starts, size, weights = window_layout(frames, window, hop)
    assert size == min(window, frames)
    assert starts[0] == 0 and starts[-1] + size == frames          # first at 0, last ends at the end
    assert (np.diff(starts) > 0).all() and (np.diff(starts) <= hop).all()
    covered = np.zeros(frames, int)
    for s in starts:
        covered[s:s + size] += 1
    assert (covered > 0).all()
    # every frame brings the same mass (1 / frames), shared by the windows that cover it: the seconds that
    # the end-aligned last window covers twice do not count double
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
    expected = np.array([(1.0 / covered[s:s + size]).sum() / frames for s in starts])
    np.testing.assert_allclose(weights, expected, rtol=1e-5)


def _bundle(family: str, task: str) -> ModelBundle:
    spec = ModelSpec(task, n_mels=N_MELS, frames=FRAMES, summary_size=3, n_classes=3, window_frames=WINDOW,
                     window_hop=WINDOW // 2)
    norm = Normalisation([0.0] * N_MELS, [1.0] * N_MELS, [0.0] * 3, [1.0] * 3)
    return ModelBundle(family=family, spec=spec, target="popular", audio={}, norm=norm, inputs=input_names(family),
                       dataset_id="d", model=build_model(family, spec))


def _clips(count: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    rng = np.random.default_rng(seed)
    mel = rng.normal(size=(count, N_MELS, FRAMES)).astype(np.float16)
    return [m.tobytes() for m in mel], mel.astype(np.float32)


@pytest.mark.parametrize("family, task", [("cnn", "regression"), ("crnn", "binary"), ("inception", "multiclass")])
def test_the_bundle_and_the_keras_model_aggregate_the_same_windows(family, task):
    bundle = _bundle(family, task)
    assert windowed(family, bundle.spec)
    stored, mel = _clips(5)
    segments = [(0, 20), (20, 150), (280, 300)]
    got = bundle.predict_occluded(stored, [None] * 5, segments)          # (5, 1 + 3, width)
    expected = [bundle.model(mel[..., None], training=False).numpy()]
    for begin, end in segments:
        occluded = mel.copy()
        occluded[:, :, begin:end] = 0.0
        expected.append(bundle.model(occluded[..., None], training=False).numpy())
    np.testing.assert_allclose(got, np.stack(expected, axis=1), rtol=1e-5, atol=1e-6)
    # a segment changes the prediction only through the windows it touches, and it does change it
    assert not np.allclose(got[:, 0], got[:, 2])


def test_a_crop_length_input_is_one_window():
    bundle = _bundle("crnn", "binary")
    _, mel = _clips(4)
    crop = mel[:, :, 100:100 + WINDOW, None]
    np.testing.assert_allclose(bundle.model(crop, training=False).numpy(),
                               inner_model(bundle.model)(crop, training=False).numpy(), rtol=1e-6, atol=1e-7)


def test_every_window_counts():
    """Changing any one window's worth of frames changes the clip's prediction (the last GRU state alone
    would ignore the start of a long input)."""
    bundle = _bundle("crnn", "binary")
    stored, mel = _clips(1, seed=3)
    base = bundle.predict(stored, [None])[0, 0]
    starts, size, _ = window_layout(FRAMES, WINDOW, WINDOW // 2)
    for start in starts:
        changed = mel.copy()
        changed[:, :, start:start + size] += 3.0
        value = bundle.predict([changed.astype(np.float16)[0].tobytes()], [None])[0, 0]
        assert abs(value - base) > 1e-5, start


def test_window_settings_travel_in_the_bundle(tmp_path):
    bundle = _bundle("inception", "binary")
    stored, _ = _clips(3)
    before = bundle.predict(stored, [None] * 3)
    bundle.save(tmp_path)
    data = json.loads((tmp_path / BUNDLE_FILE).read_text())
    assert (data["spec"]["window_frames"], data["spec"]["window_hop"], data["format"]) == (WINDOW, WINDOW // 2, 2)
    np.testing.assert_array_equal(ModelBundle.load(tmp_path).predict(stored, [None] * 3), before)


def test_a_crnn_bundle_of_the_last_state_format_is_refused_with_one_line(tmp_path):
    _bundle("crnn", "binary").save(tmp_path)
    data = json.loads((tmp_path / BUNDLE_FILE).read_text())
    del data["format"]                              # what bundles saved before format 2 look like
    (tmp_path / BUNDLE_FILE).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="crnn model of bundle format 1.*retrain"):
        ModelBundle.load(tmp_path)


def test_a_window_hop_outside_the_window_is_refused():
    with pytest.raises(ValueError, match="window_hop"):
        ModelSpec("binary", window_frames=64, window_hop=65)
    with pytest.raises(ValueError, match="window_hop"):
        ModelSpec("binary", window_frames=64)
