"""CRNN: convolution blocks that pool mostly over frequency, then two GRUs over time whose outputs are
averaged over time (the hip-hop study's best model; the average, not the last state, so that every second
of the input counts, not only the last few)."""
from __future__ import annotations

from typing import Any

from hitpredict.keras_compat import keras
from hitpredict.models.cnn import conv_block
from hitpredict.models.heads import ModelSpec, head, mel_input


def build_crnn(spec: ModelSpec, filters: tuple[int, ...] = (16, 32, 32), units: int = 32) -> Any:
    """A CRNN: one :func:`~hitpredict.models.cnn.conv_block` per entry of ``filters`` (pooling mel by 4, 4,
    then 2, and time by 2), the mel axis averaged away, then two GRUs of ``units`` over time, their outputs
    averaged over time, and the head.

    Input ``mel`` (batch, n_mels, frames, 1), any n_mels and frames; output (batch, 1) or
    (batch, n_classes). An uncompiled Keras 2 model named ``crnn``.
    """
    k = keras()
    inputs = mel_input()
    x = inputs
    for i, n in enumerate(filters):
        x = conv_block(x, n, spec.seed + i, f"block{i}", pool=(4 if i < 2 else 2, 2))
    # (batch, mel', time', channels) -> (batch, time', channels) by averaging what is left of the mel axis
    x = k.layers.Lambda(lambda t: k.backend.mean(t, axis=1), name="collapse_mel")(x)
    x = k.layers.GRU(units, return_sequences=True, name="gru1",
                     kernel_initializer=k.initializers.GlorotUniform(seed=spec.seed))(x)
    x = k.layers.GRU(units, return_sequences=True, name="gru2",
                     kernel_initializer=k.initializers.GlorotUniform(seed=spec.seed + 1))(x)
    x = k.layers.GlobalAveragePooling1D(name="time_pool")(x)
    return k.Model(inputs, head(spec, x), name="crnn")
