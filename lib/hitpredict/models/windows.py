"""Whole-clip predictions from a model trained on crops: the one definition of the window aggregation.

A spectrogram model trained on random crops of ``window`` frames predicts a whole clip as the
aggregate of its predictions on windows of that length, spread evenly over the clip at most ``hop``
frames apart (half a window by default), from its start to its end, so that every frame is in at
least one window and no stretch is covered more often than another.
The aggregate is the mean of the windows' logits, weighted so that every frame counts the same
(:func:`window_weights`): for a binary head the mean log-odds through a sigmoid, for a multiclass head
the mean log-probabilities through a softmax (a normalised geometric mean), for regression the mean
value. A clip no longer than one window is one window.

The windows and the aggregate are defined here once, in TensorFlow ops, and used two ways: inside the
Keras model (:func:`windowed_model`, what training fits and validates on whole clips) and by
:meth:`hitpredict.train.bundle.ModelBundle.predict_occluded` (which runs the same inner model on the
same windows, so that an occluded copy recomputes only the windows its segment touches). The window
length and hop travel in the bundle's :class:`~hitpredict.models.heads.ModelSpec`.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from hitpredict.keras_compat import keras
from hitpredict.models.heads import ModelSpec

#: Probabilities are clipped to [EPS, 1 - EPS] before taking logits (float32).
EPS = 1e-7


def window_starts(frames: Any, window: int, hop: int) -> Any:
    """First frame of each window over a clip of ``frames`` frames (a Python int or a scalar tensor): as
    many windows as a ``hop`` apart need to reach the clip's end, spread evenly from 0 to the end (so the
    last ends at the clip's end and no stretch of the clip is covered more often than another; the actual
    hop is at most ``hop``); a single window at 0 when the clip is no longer than ``window``. Returns an
    int32 tensor of shape (windows,)."""
    import tensorflow as tf

    frames = tf.cast(frames, tf.int32)
    size = tf.minimum(window, frames)
    count = 1 + (frames - size + hop - 1) // hop
    last = tf.cast(frames - size, tf.float64)
    steps = tf.cast(tf.maximum(count - 1, 1), tf.float64)
    return tf.cast(tf.round(tf.cast(tf.range(count), tf.float64) * last / steps), tf.int32)


def window_weights(frames: Any, window: int, hop: int) -> Any:
    """Each window's weight in the clip's mean, so that every frame counts the same: a frame shares its
    1 / ``frames`` among the windows that cover it, and a window's weight is the sum over its frames.
    (The last window, aligned to the clip's end, overlaps its neighbour more; plain means would let the
    seconds it covers count more, and their occlusion explain more.) A float32 tensor (windows,) summing to 1."""
    import tensorflow as tf

    frames = tf.cast(frames, tf.int32)
    starts = window_starts(frames, window, hop)
    size = tf.minimum(window, frames)
    index = tf.reshape(starts[:, None] + tf.range(size)[None, :], [-1])
    cover = tf.math.unsorted_segment_sum(tf.ones_like(index, tf.float32), index, frames)   # windows per frame
    share = tf.reshape(tf.gather(1.0 / cover, index), [-1, size])
    return tf.reduce_sum(share, axis=1) / tf.cast(frames, tf.float32)


def window_layout(frames: int, window: int, hop: int) -> tuple[np.ndarray, int, np.ndarray]:
    """(starts, size, weights) for a clip of ``frames`` frames, as numpy: :func:`window_starts`, the window
    length in frames (``window``, or ``frames`` for a shorter clip) and :func:`window_weights`."""
    return (np.asarray(window_starts(frames, window, hop)), min(window, frames),
            np.asarray(window_weights(frames, window, hop)))


def aggregate_windows(outputs: Any, task: str, weights: Any) -> Any:
    """Per-window model outputs (batch, windows, width) -> one output per clip (batch, width): the
    ``weights``-weighted mean (:func:`window_weights`, shape (windows,)) of the windows' logits through
    the head's activation (see the module doc); float32."""
    import tensorflow as tf

    outputs = tf.cast(outputs, tf.float32)
    weights = tf.cast(weights, tf.float32)[None, :, None]

    def mean(values: Any) -> Any:
        return tf.reduce_sum(values * weights, axis=1)

    if task == "regression":
        return mean(outputs)
    p = tf.clip_by_value(outputs, EPS, 1 - EPS)
    if task == "binary":
        return tf.sigmoid(mean(tf.math.log(p) - tf.math.log1p(-p)))
    return tf.nn.softmax(mean(tf.math.log(p)), axis=-1)


def windowed_model(inner: Any, spec: ModelSpec) -> Any:
    """``inner`` (a spectrogram model with a ``mel`` input, trained on ``spec.window_frames``-frame crops)
    as a whole-clip model: the same named inputs, ``mel`` of any length cut into windows
    (:func:`window_starts`), other inputs repeated per window, ``inner`` on every window, then
    :func:`aggregate_windows`. Output (batch, 1) or (batch, n_classes); an uncompiled Keras 2 model named
    like ``inner`` whose only weights are ``inner``'s (a nested model named ``window_model``)."""
    k = keras()
    window, hop = int(spec.window_frames or 0), int(spec.window_hop or 0)
    inputs = {name: k.Input(shape=tuple(t.shape[1:]), name=name) for name, t in zip(inner.input_names, inner.inputs)}
    clip_windows, repeat_per_window, mean_window_logits = _layers()
    cut = clip_windows(window, hop, name="clip_windows")
    windows = cut(inputs["mel"])
    feed = {name: (windows if name == "mel" else repeat_per_window(window, hop, name=f"repeat_{name}")(
        [tensor, inputs["mel"]])) for name, tensor in inputs.items()}
    inner_model = k.Model(inner.inputs, inner.outputs, name="window_model")
    per_window = inner_model(feed if len(feed) > 1 else feed["mel"])
    out = mean_window_logits(window, hop, spec.task, name="mean_window_logits")([per_window, inputs["mel"]])
    return k.Model(list(inputs.values()) if len(inputs) > 1 else inputs["mel"], out, name=inner.name)


def inner_model(model: Any) -> Any:
    """The per-window model inside a :func:`windowed_model` (shares its layers and weights)."""
    return model.get_layer("window_model")


@functools.lru_cache(maxsize=None)
def _layers() -> tuple[Any, Any, Any]:
    """The three Keras layers of :func:`windowed_model`, defined on first use (defining them imports
    TensorFlow, which ``import hitpredict.models`` must not)."""
    import tensorflow as tf

    base = keras().layers.Layer

    class ClipWindows(base):  # type: ignore[misc, valid-type]
        """mel (batch, n_mels, frames, 1) -> its windows (batch * windows, n_mels, size, 1), clip-major."""

        def __init__(self, window: int, hop: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.window, self.hop = window, hop

        def call(self, mel: Any) -> Any:
            frames = tf.shape(mel)[2]
            starts = window_starts(frames, self.window, self.hop)
            size = tf.minimum(self.window, frames)
            index = starts[:, None] + tf.range(size)[None, :]                 # (windows, size)
            cut = tf.gather(mel, index, axis=2)                               # (batch, n_mels, windows, size, 1)
            cut = tf.transpose(cut, [0, 2, 1, 3, 4])                          # (batch, windows, n_mels, size, 1)
            n_mels = mel.shape[1] if mel.shape[1] is not None else tf.shape(mel)[1]
            return tf.reshape(cut, [-1, n_mels, size, 1])

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "window": self.window, "hop": self.hop}

    class RepeatPerWindow(base):  # type: ignore[misc, valid-type]
        """[values (batch, ...), mel] -> values repeated once per window of mel (batch * windows, ...)."""

        def __init__(self, window: int, hop: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.window, self.hop = window, hop

        def call(self, inputs: Any) -> Any:
            values, mel = inputs
            count = tf.shape(window_starts(tf.shape(mel)[2], self.window, self.hop))[0]
            return tf.repeat(values, count, axis=0)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "window": self.window, "hop": self.hop}

    class MeanWindowLogits(base):  # type: ignore[misc, valid-type]
        """[per-window outputs (batch * windows, width), mel] -> :func:`aggregate_windows` (batch, width)."""

        def __init__(self, window: int, hop: int, task: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.window, self.hop, self.task = window, hop, task

        def call(self, inputs: Any) -> Any:
            outputs, mel = inputs
            weights = window_weights(tf.shape(mel)[2], self.window, self.hop)
            return aggregate_windows(tf.reshape(outputs, [-1, tf.shape(weights)[0], outputs.shape[-1]]), self.task,
                                     weights)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "window": self.window, "hop": self.hop, "task": self.task}

    return ClipWindows, RepeatPerWindow, MeanWindowLogits
