"""Inception-style CNN whose first layer spans the whole mel axis with several kernel widths
(the Mando-pop study's model): each branch sees all frequencies over 1 to 9 frames.

:func:`inception_branch` is the spectrogram branch alone (also the ``fusion`` family's mel branch);
:func:`build_inception` puts a head on it.
"""
from __future__ import annotations

from typing import Any

from hitpredict.keras_compat import keras
from hitpredict.models.heads import ModelSpec, head

WIDTHS = (1, 3, 5, 9)
FILTERS = 16


def inception_input(spec: ModelSpec) -> Any:
    """The ``mel`` input of an inception model, shape (batch, ``spec.n_mels``, frames, 1), any frames:
    the full mel axis is the kernel height, so n_mels is fixed."""
    return keras().Input(shape=(spec.n_mels, None, 1), name="mel")


def inception_branch(spec: ModelSpec, inputs: Any, widths: tuple[int, ...] = WIDTHS, filters: int = FILTERS,
                     prefix: str = "") -> Any:
    """The inception spectrogram branch on ``inputs`` (the ``mel`` tensor, (batch, ``spec.n_mels``, frames, 1)):
    per entry of ``widths``, ``filters`` ReLU kernels spanning all bands over that many frames, their outputs
    concatenated, a 3-frame 1-D convolution (``2 * filters`` channels), then global average and max pooling
    over time. Returns the pooled features, shape (batch, 4 * ``filters``). Layer names get ``prefix``."""
    k = keras()
    branches = []
    for i, width in enumerate(widths):
        b = k.layers.Conv2D(filters, (spec.n_mels, width), padding="valid", activation="relu",
                            kernel_initializer=k.initializers.HeNormal(seed=spec.seed + i),
                            name=f"{prefix}span_w{width}")(
            k.layers.ZeroPadding2D(((0, 0), (width // 2, (width - 1) // 2)), name=f"{prefix}pad_w{width}")(inputs))
        branches.append(b)
    x = k.layers.Concatenate(axis=-1, name=f"{prefix}inception")(branches)  # (batch, 1, time, filters * widths)
    x = k.layers.Lambda(lambda t: k.backend.squeeze(t, 1), name=f"{prefix}squeeze_mel")(x)
    x = k.layers.Conv1D(2 * filters, 3, padding="same", activation="relu",
                        kernel_initializer=k.initializers.HeNormal(seed=spec.seed), name=f"{prefix}temporal")(x)
    return k.layers.Concatenate(name=f"{prefix}pools")([k.layers.GlobalAveragePooling1D(name=f"{prefix}avg")(x),
                                                        k.layers.GlobalMaxPooling1D(name=f"{prefix}max")(x)])


def build_inception(spec: ModelSpec, widths: tuple[int, ...] = WIDTHS, filters: int = FILTERS) -> Any:
    """An Inception-style CNN: :func:`inception_branch` and the head.

    Input ``mel`` (batch, ``spec.n_mels``, frames, 1), any frames; output (batch, 1) or
    (batch, n_classes). An uncompiled Keras 2 model named ``inception``.
    """
    inputs = inception_input(spec)
    return keras().Model(inputs, head(spec, inception_branch(spec, inputs, widths, filters)), name="inception")
