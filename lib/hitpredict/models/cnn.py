"""A small 2-D CNN over the log-mel spectrogram."""
from __future__ import annotations

from typing import Any

from hitpredict.keras_compat import keras
from hitpredict.models.heads import ModelSpec, head, mel_input


def conv_block(x: Any, filters: int, seed: int, name: str, pool: tuple[int, int] = (2, 2)) -> Any:
    """Conv 3x3 (``filters`` channels) -> batch norm -> ReLU -> max pool by ``pool`` (mel, time).

    ``x``: (batch, mel, time, channels) -> (batch, ceil(mel / pool[0]), ceil(time / pool[1]), filters);
    its layers are named ``{name}_conv``, ``_bn``, ``_relu`` and ``_pool``.
    """
    k = keras()
    x = k.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                        kernel_initializer=k.initializers.HeNormal(seed=seed), name=f"{name}_conv")(x)
    # momentum 0.9: catalogues are small, so the moving statistics must settle in tens of steps
    x = k.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    x = k.layers.Activation("relu", name=f"{name}_relu")(x)
    return k.layers.MaxPooling2D(pool, padding="same", name=f"{name}_pool")(x)


def build_cnn(spec: ModelSpec, filters: tuple[int, ...] = (16, 32, 64), dropout: float = 0.3) -> Any:
    """A 2-D CNN: one :func:`conv_block` (2x2 pooling) per entry of ``filters``, global average pooling,
    ``dropout`` (0-1), then the head.

    Input ``mel`` (batch, n_mels, frames, 1), any n_mels and frames; output (batch, 1) or
    (batch, n_classes). An uncompiled Keras 2 model named ``cnn``.
    """
    k = keras()
    inputs = mel_input()
    x = inputs
    for i, n in enumerate(filters):
        x = conv_block(x, n, spec.seed + i, f"block{i}")
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    x = k.layers.Dropout(dropout, seed=spec.seed, name="dropout")(x)
    return k.Model(inputs, head(spec, x), name="cnn")
