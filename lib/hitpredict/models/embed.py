"""``embed``: a multilayer perceptron on the clip's pretrained music embedding (musicnn, computed once by
``extract_features``) beside the summary vector."""
from __future__ import annotations

from typing import Any

from hitpredict.keras_compat import keras
from hitpredict.models.heads import ModelSpec, embedding_input, head, summary_input


def build_embed(spec: ModelSpec, units: tuple[int, ...] = (128, 64), dropout: float = 0.3) -> Any:
    """An MLP on the embedding and the summary vector, concatenated: one ReLU layer per entry of ``units``
    (its width), each followed by ``dropout`` (0-1), then the head.

    Inputs ``embedding`` (batch, ``spec.embedding_size``) and ``summary`` (batch, ``spec.summary_size``), both
    normalised; output (batch, 1) or (batch, n_classes). An uncompiled Keras 2 model named ``embed``.
    ``ValueError`` when ``spec.embedding_size`` is 0 (the dataset has no embedding).
    """
    if spec.embedding_size < 1:
        raise ValueError("the embed family needs an embedding: spec.embedding_size is 0 (the dataset's features "
                         "have no embedding; turn features.embedding on and re-extract)")
    k = keras()
    embedding, summary = embedding_input(spec), summary_input(spec)
    x = k.layers.Concatenate(name="embedding_summary")([embedding, summary])
    for i, n in enumerate(units):
        x = k.layers.Dense(n, activation="relu", kernel_initializer=k.initializers.HeNormal(seed=spec.seed + i),
                           name=f"dense{i}")(x)
        x = k.layers.Dropout(dropout, seed=spec.seed + i, name=f"dropout{i}")(x)
    return k.Model([embedding, summary], head(spec, x), name="embed")
