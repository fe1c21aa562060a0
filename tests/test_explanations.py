"""Explanations follow the evidence: a CRNN trained on 6 s crops, scored on whole 30 s clips, finds a
popularity cue planted only in seconds 9-15.

The catalogue is synthetic music (hitpredict.synth) of random styles; a popular track carries a bright
whistled hook in seconds 9-15 and nowhere else, an unpopular one does not. The model is the product's
(``build_model("crnn")`` with the window length of its training crops), fed by the product's input
transforms (random crops, normalisation) and explained by the product's scorer (occlusion of 3 s
segments, aggregated over windows). Before whole-clip windows, the CRNN kept only its last GRU state
and its explanations pointed at seconds 27-30 whatever the song.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from hitpredict.audio_params import AudioParams
from hitpredict.features import encode_mel, log_mel
from hitpredict.keras_compat import keras
from hitpredict.models import ModelSpec, build_model, input_names
from hitpredict.scoring.scorer import ScoreSettings, score_rows, segment_bounds
from hitpredict.synth.music import TrackStyle, render
from hitpredict.train.bundle import ModelBundle
from hitpredict.train.plan import Augmentation, Normalisation

PARAMS = AudioParams(n_mels=64)
CUE_SECONDS = (9.0, 15.0)
CROP = 256              # frames: about 6 s, the demo's training crop


def _hook(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A bright whistled melody: eighth notes between 2 and 4 kHz."""
    rng = np.random.default_rng(seed)
    n, note = int(seconds * rate), int(0.25 * rate)
    out = np.zeros(n, np.float32)
    t = np.arange(note) / rate
    for start in range(0, n - note + 1, note):
        freq = rng.uniform(2000, 4000)
        out[start:start + note] = np.sin(2 * np.pi * freq * t) * np.hanning(note)
    return out


def _catalogue(count: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    """``count`` clips (stored log-mel bytes) and their labels (1: the hook in seconds 9-15)."""
    rng = np.random.default_rng(seed)
    rate = PARAMS.sample_rate
    mels, labels = [], []
    for i in range(count):
        style = TrackStyle(tempo_bpm=float(rng.uniform(70, 150)), key=int(rng.integers(0, 12)),
                           minor=bool(rng.integers(0, 2)), brightness=float(rng.uniform(0.2, 0.8)),
                           loudness_db=float(rng.uniform(-20, -10)), seconds=PARAMS.clip_seconds,
                           intro_bars=int(rng.integers(0, 3)), seed=seed * 1000 + i)
        samples = render(style, rate)
        popular = i % 2
        if popular:
            begin, end = (int(s * rate) for s in CUE_SECONDS)
            level = np.sqrt(np.mean(samples ** 2))
            samples = samples.copy()
            samples[begin:end] += 1.5 * level * _hook(CUE_SECONDS[1] - CUE_SECONDS[0], rate, seed * 1000 + i)
        mel_db, _ = log_mel(samples, PARAMS)
        mels.append(encode_mel(mel_db)[0])
        labels.append(popular)
    return mels, np.array(labels, np.float32)


def test_crnn_explanations_find_a_cue_planted_in_seconds_9_to_15():
    from hitpredict.train.inputs import model_inputs
    import tensorflow as tf

    k = keras()
    train_mel, train_y = _catalogue(96, seed=1)
    test_mel, test_y = _catalogue(24, seed=2)
    frames = PARAMS.frames
    stack = np.stack([np.frombuffer(m, np.float16).reshape(PARAMS.n_mels, frames).astype(np.float32) for m in train_mel])
    norm = Normalisation(stack.mean(axis=(0, 2)).tolist(), stack.std(axis=(0, 2)).tolist(), [0.0], [1.0])
    spec = ModelSpec("binary", n_mels=PARAMS.n_mels, frames=frames, summary_size=1, window_frames=CROP,
                     window_hop=CROP // 2)
    model = build_model("crnn", spec)
    model.compile(optimizer=k.optimizers.Adam(3e-3), loss="binary_crossentropy")
    augment = Augmentation(crop_frames=CROP)
    raw = np.array(train_mel, dtype=object)
    summary = np.zeros((len(raw), 1), np.float32)
    rng = np.random.default_rng(0)
    for epoch in range(30):   # a fresh random crop of every clip each epoch, as training does
        order = rng.permutation(len(raw))
        for first in range(0, len(order), 16):
            batch = order[first:first + 16]
            x = model_inputs(raw[batch], summary[batch], input_names("crnn"), PARAMS.n_mels, frames, norm,
                             augment, seed=epoch * 100 + first)
            model.train_on_batch(x, train_y[batch])
    tf.keras.backend.clear_session()

    bundle = ModelBundle(family="crnn", spec=spec, target="popular", audio=PARAMS.model_dump(), norm=norm,
                         inputs=input_names("crnn"), dataset_id="planted", model=model)
    rows = score_rows(bundle, "m", "1", [str(i) for i in range(len(test_mel))], test_mel, [None] * len(test_mel),
                      ScoreSettings(segment_seconds=3.0))
    probs = np.array([r["prob_popular"] for r in rows])
    # the model has learned the cue: its whole-clip scores rank the popular tracks first
    assert roc_auc_score(test_y, probs) >= 0.9, probs

    bounds = segment_bounds(PARAMS, 3.0)
    seconds = [(b * PARAMS.hop_length / PARAMS.sample_rate, e * PARAMS.hop_length / PARAMS.sample_rate)
               for b, e in bounds]
    cue = [i for i, (b, e) in enumerate(seconds) if b >= CUE_SECONDS[0] - 0.1 and e <= CUE_SECONDS[1] + 0.1]
    assert len(cue) == 2, seconds
    importance = np.array([r["segment_importance"] for r in rows])[test_y == 1]   # (popular tracks, segments)
    top = np.argmax(importance, axis=1)
    assert np.isin(top, cue).all(), (top, importance.round(3))
    # and the seconds outside the cue count far less: the last segment (27-30 s) no more than any other
    outside = [i for i in range(len(bounds)) if i not in cue]
    assert importance[:, cue].mean() > 3 * np.abs(importance[:, outside]).mean(), importance.round(3)
    assert (importance[:, -1] < importance[:, cue].max(axis=1)).all(), importance.round(3)
