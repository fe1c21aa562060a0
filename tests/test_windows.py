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


@pytest.mark.parametrize("family, task, frames, window, segments", [
    ("crnn", "binary", 1292, 256, "3s"),          # the demo's shape: 10 windows, 10 segments of 3 s
    ("cnn", "regression", 300, 64, [(0, 20), (20, 150), (280, 300), (62, 66)]),
    ("inception", "multiclass", 300, 64, [(0, 20), (20, 150), (280, 300)]),
    ("crnn", "binary", 100, 64, [(0, 10), (30, 70), (90, 100)]),   # two windows overlapping by 28 frames
])
def test_occluded_windows_recompute_their_trunk_only_around_the_segment(family, task, frames, window, segments):
    """A windowed model of a time-local family (TIME_LOCAL_TRUNKS) recomputes an occluded window's trunk only
    on a region around its segment, spliced into the stored window's: the numbers of full passes of the inner
    model over every occluded window, and a track's numbers do not depend on the tracks beside it."""
    from hitpredict.audio_params import AudioParams
    from hitpredict.models import TIME_LOCAL_TRUNKS
    from hitpredict.scoring.scorer import segment_bounds

    n_mels = 32 if frames > 1000 else N_MELS
    spec = ModelSpec(task, n_mels=n_mels, frames=frames, summary_size=3, n_classes=3, window_frames=window,
                     window_hop=window // 2, seed=4)
    model = build_model(family, spec)
    rng = np.random.default_rng(7)
    for layer in inner_model(model).layers:   # batch norm far from the identity, so a wrong splice shows
        if layer.name.endswith("_bn"):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, rng.normal(0, 0.5, mean.shape).astype("float32"),
                               rng.uniform(0.5, 2.0, var.shape).astype("float32")])
    bundle = ModelBundle(family=family, spec=spec, target="popular", audio={},
                         norm=Normalisation([0.0] * n_mels, [1.0] * n_mels, [0.0] * 3, [1.0] * 3),
                         inputs=input_names(family), dataset_id="d", model=model)
    if segments == "3s":
        segments = segment_bounds(AudioParams(n_mels=n_mels), 3.0)
    assert family in TIME_LOCAL_TRUNKS and windowed(family, spec)
    stored = [m.tobytes() for m in rng.normal(size=(5, n_mels, frames)).astype(np.float16)]
    local = bundle.predict_occluded(stored, [None] * 5, segments)
    full = bundle.predict_occluded(stored, [None] * 5, segments, local=False)
    np.testing.assert_allclose(local, full, rtol=0, atol=1e-6)
    assert np.abs(full[:, :1] - full[:, 1:]).max() > 1e-4          # the occlusions do change the outputs
    alone = bundle.predict_occluded(stored[3:4], [None], segments)
    np.testing.assert_array_equal(alone[0], local[3])
    np.testing.assert_array_equal(bundle.predict(stored[3:4], [None])[0], local[3, 0])


def test_window_regions_hold_their_segment_with_context_and_few_lengths():
    """Each recomputed region starts on the trunk's stride, holds its segment with ``2 * radius`` frames of
    context where the window has them, and the regions of the demo's layout come in a few lengths."""
    from hitpredict.audio_params import AudioParams
    from hitpredict.models import TIME_LOCAL_TRUNKS
    from hitpredict.scoring.scorer import segment_bounds
    from hitpredict.train.bundle import window_regions

    local = TIME_LOCAL_TRUNKS["crnn"]
    segments = segment_bounds(AudioParams(), 3.0)
    starts, size, _ = window_layout(1292, 256, 128)
    touched = [(s, w) for s, (b, e) in enumerate(segments) for w, start in enumerate(starts)
               if start < e and b < start + size]
    regions = window_regions(segments, touched, starts, size, local)
    assert len(regions) == len(touched) == 28
    for (s, w), (lo, hi, begin, end, first, last) in zip(touched, regions):
        assert (begin, end) == (max(segments[s][0] - starts[w], 0), min(segments[s][1] - starts[w], size))
        assert lo % local.stride == 0 and 0 <= lo <= max(0, begin - 2 * local.radius)
        assert min(size, end + 2 * local.radius) <= hi <= size
        assert first * local.stride <= max(0, begin - local.radius) and last * local.stride >= min(
            size, end + local.radius)
    assert len({hi - lo for lo, hi, *_ in regions}) <= 8
    assert sum(hi - lo for lo, hi, *_ in regions) < 0.7 * len(regions) * size   # far less than whole windows
