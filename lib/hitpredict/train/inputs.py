"""tf.data transforms from stored columns to model inputs; training and scoring share them.

A stored spectrogram is float16 log-mel dB bytes (n_mels x frames, C order). It is
decoded inside the TensorFlow graph (``tf.io.decode_raw``), optionally augmented
(training only: gain, random time crop, time masks, all in dB before or after
normalisation as noted), and normalised per mel band with the training split's
statistics. The pretrained model's vectors (``embedding``, ``tags``: one per clip, float32) are
standardised per dimension with the training split's statistics too (tag probabilities included, so
that rare tags are not drowned out by common ones).
"""
from __future__ import annotations

from typing import Any, Mapping

from hitpredict.keras_compat import ensure_keras2
from hitpredict.models import VECTOR_INPUTS
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


def normalise_vector(values: Any, name: str, norm: Normalisation) -> Any:
    """Per-dimension standardisation of the vector input ``name`` (``embedding`` or ``tags``), shape
    (batch, size), with the training split's statistics; float32, same shape. ``ValueError`` when the
    statistics are missing (a dataset without that column) or their length differs from ``size``."""
    mean, std = norm.vector_stats(name)
    size = values.shape[-1]
    if not mean:
        raise ValueError(f"the model reads {name!r} but its normalisation has no {name} statistics: the dataset "
                         f"was built from features without {name} (re-extract with embeddings on, rebuild)")
    if size is not None and int(size) != len(mean):
        raise ValueError(f"{name!r} vectors have {int(size)} values, the model's statistics {len(mean)}: "
                         "features extracted with another embedding model or layer")
    mean_t = tf.constant(mean, tf.float32)[None, :]
    std_t = tf.maximum(tf.constant(std, tf.float32), _MIN_STD)[None, :]
    return (tf.cast(values, tf.float32) - mean_t) / std_t


def model_inputs(mel_raw: Any, summary: Any, inputs: tuple[str, ...], n_mels: int, frames: int,
                 norm: Normalisation, augment: Augmentation | None = None, seed: int = 0,
                 vectors: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Stored columns of a batch -> the model's named inputs, each normalised with the training split's
    statistics: ``mel`` (batch, n_mels, frames, 1) from float16 bytes (augmented when ``augment``),
    ``summary`` (batch, summary_size), and ``embedding`` / ``tags`` (batch, size) from ``vectors``
    (input name -> float32 array or tensor (batch, size)) for the inputs in ``inputs`` that read them.
    ``ValueError`` names an input in ``inputs`` that ``vectors`` lacks."""
    out: dict[str, Any] = {}
    for name in VECTOR_INPUTS:
        if name in inputs:
            if vectors is None or vectors.get(name) is None:
                raise ValueError(f"the model reads {name!r}, but no {name} vectors were given "
                                 f"(model_inputs(vectors={{'{name}': ...}}))")
            out[name] = normalise_vector(vectors[name], name, norm)
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
