"""Inception-style CNN whose first layer spans the whole mel axis with several kernel widths
(the Mando-pop study's model): each branch sees all frequencies over 1 to 9 frames."""
from __future__ import annotations

from typing import Any

from hitpredict.keras_compat import keras
from hitpredict.models.heads import ModelSpec, head


def build_inception(spec: ModelSpec, widths: tuple[int, ...] = (1, 3, 5, 9), filters: int = 16) -> Any:
    """An Inception-style CNN: per entry of ``widths``, ``filters`` ReLU kernels spanning all
    ``spec.n_mels`` bands over that many frames; their outputs concatenated, a 3-frame 1-D convolution,
    then global average and max pooling over time and the head.

    Input ``mel`` (batch, ``spec.n_mels``, frames, 1), any frames; output (batch, 1) or
    (batch, n_classes). An uncompiled Keras 2 model named ``inception``.
    """
    k = keras()
    inputs = k.Input(shape=(spec.n_mels, None, 1), name="mel")  # the full mel axis is the kernel height
    branches = []
    for i, width in enumerate(widths):
        b = k.layers.Conv2D(filters, (spec.n_mels, width), padding="valid", activation="relu",
                            kernel_initializer=k.initializers.HeNormal(seed=spec.seed + i), name=f"span_w{width}")(
            k.layers.ZeroPadding2D(((0, 0), (width // 2, (width - 1) // 2)), name=f"pad_w{width}")(inputs))
        branches.append(b)
    x = k.layers.Concatenate(axis=-1, name="inception")(branches)  # (batch, 1, time, filters * widths)
    x = k.layers.Lambda(lambda t: k.backend.squeeze(t, 1), name="squeeze_mel")(x)
    x = k.layers.Conv1D(2 * filters, 3, padding="same", activation="relu",
                        kernel_initializer=k.initializers.HeNormal(seed=spec.seed), name="temporal")(x)
    x = k.layers.Concatenate(name="pools")([k.layers.GlobalAveragePooling1D(name="avg")(x),
                                            k.layers.GlobalMaxPooling1D(name="max")(x)])
    return k.Model(inputs, head(spec, x), name="inception")
