"""tf.data transforms from stored columns to model inputs; training and scoring share them.

A stored spectrogram is float16 log-mel dB bytes (n_mels x frames, C order). It is
decoded inside the TensorFlow graph (``tf.io.decode_raw``), optionally augmented
(training only: gain, random time crop, time masks, all in dB before or after
normalisation as noted), and normalised per mel band with the training split's
statistics.
"""
from __future__ import annotations

from typing import Any

from hitpredict.keras_compat import ensure_keras2
from hitpredict.train.plan import Augmentation, Normalisation

# Once, at import: these functions run while tf.data traces them, where touching os.environ
# has no business (AutoGraph once printed the whole environment trying to convert that call).
# This module loads TensorFlow when imported, so the modules using it import it where they need it.
ensure_keras2()
import tensorflow as tf  # noqa: E402

_MIN_STD = 1e-3


def decode_mel(raw: Any, n_mels: int, frames: int) -> Any:
    """float16 bytes, shape (batch,) -> float32 dB, shape (batch, n_mels, frames)."""
    values = tf.io.decode_raw(raw, tf.float16)
    return tf.cast(tf.reshape(values, (-1, n_mels, frames)), tf.float32)


def normalise_mel(mel: Any, norm: Normalisation) -> Any:
    """Per-band standardisation with the training split's statistics."""
    mean = tf.constant(norm.mel_mean, tf.float32)[None, :, None]
    std = tf.maximum(tf.constant(norm.mel_std, tf.float32), _MIN_STD)[None, :, None]
    return (mel - mean) / std


def normalise_summary(summary: Any, norm: Normalisation) -> Any:
    """Per-dimension standardisation of summary vectors, shape (batch, summary_size), with the training
    split's statistics; float32, same shape."""
    mean = tf.constant(norm.summary_mean, tf.float32)[None, :]
    std = tf.maximum(tf.constant(norm.summary_std, tf.float32), _MIN_STD)[None, :]
    return (tf.cast(summary, tf.float32) - mean) / std


def augment_mel(mel: Any, augment: Augmentation, seed: int) -> tuple[Any, Any]:
    """Training-only changes to a batch of dB spectrograms (before normalisation).

    Returns (mel, mask): ``mask`` is True where a time mask applies (set to the mean
    after normalisation), or None.
    """
    frames = tf.shape(mel)[2]
    batch = tf.shape(mel)[0]
    if augment.gain_db > 0:
        mel = mel + tf.random.uniform((batch, 1, 1), -augment.gain_db, augment.gain_db, seed=seed)
    if augment.crop_frames:
        crop = tf.minimum(frames, augment.crop_frames)
        start = tf.random.uniform((), 0, frames - crop + 1, dtype=tf.int32, seed=seed + 1)
        mel = mel[:, :, start:start + crop]
        frames = crop
    mask = None
    if augment.time_masks:
        position = tf.range(frames)[None, None, :]
        mask = tf.zeros_like(mel, dtype=tf.bool)
        for i in range(augment.time_masks):
            width = tf.random.uniform((batch, 1, 1), 0, augment.time_mask_frames + 1, dtype=tf.int32, seed=seed + 2 + i)
            room = tf.cast(tf.maximum(frames - width, 0) + 1, tf.float32)  # per clip: where the mask fits
            start = tf.cast(tf.random.uniform((batch, 1, 1), seed=seed + 100 + i) * room, tf.int32)
            mask = mask | ((position >= start) & (position < start + width))
    return mel, mask


def model_inputs(mel_raw: Any, summary: Any, inputs: tuple[str, ...], n_mels: int, frames: int,
                 norm: Normalisation, augment: Augmentation | None = None, seed: int = 0) -> dict[str, Any]:
    """Stored columns of a batch -> the model's named inputs (``mel``: batch x n_mels x frames x 1)."""
    out: dict[str, Any] = {}
    if "mel" in inputs:
        mel = decode_mel(mel_raw, n_mels, frames)
        mask = None
        if augment is not None:
            mel, mask = augment_mel(mel, augment, seed)
        mel = normalise_mel(mel, norm)
        if mask is not None:
            mel = tf.where(mask, tf.zeros_like(mel), mel)
        out["mel"] = mel[..., None]
    if "summary" in inputs:
        out["summary"] = normalise_summary(summary, norm)
    return out
