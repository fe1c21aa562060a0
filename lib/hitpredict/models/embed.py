"""``embed``: a multilayer perceptron (or, with no hidden layers, a linear model) on the clip's pretrained music
embedding (musicnn, computed once by ``extract_features``) beside the summary vector."""
from __future__ import annotations

from typing import Any

from hitpredict.keras_compat import keras
from hitpredict.models.heads import ModelSpec, embedding_input, head, summary_input


def build_embed(spec: ModelSpec) -> Any:
    """The embedding and the summary vector, concatenated, with dropout ``spec.embed_input_dropout``; then one
    ReLU layer per entry of ``spec.embed_units`` (its width), each followed by dropout ``spec.embed_dropout``;
    then the head. Every kernel carries an L2 penalty ``spec.embed_l2``. With no units this is a linear
    (logistic, for the classifying tasks) model on the inputs.

    Inputs ``embedding`` (batch, ``spec.embedding_size``) and ``summary`` (batch, ``spec.summary_size``), both
    normalised; output (batch, 1) or (batch, n_classes). An uncompiled Keras 2 model named ``embed``.
    ``ValueError`` when ``spec.embedding_size`` is 0 (the dataset has no embedding).
    """
    if spec.embedding_size < 1:
        raise ValueError("the embed family needs an embedding: spec.embedding_size is 0 (the dataset's features "
                         "have no embedding; turn features.embedding on and re-extract)")
    k = keras()
    penalty = k.regularizers.L2(spec.embed_l2) if spec.embed_l2 else None
    embedding, summary = embedding_input(spec), summary_input(spec)
    x = k.layers.Concatenate(name="embedding_summary")([embedding, summary])
    if spec.embed_input_dropout:
        x = k.layers.Dropout(spec.embed_input_dropout, seed=spec.seed - 1, name="input_dropout")(x)
    for i, n in enumerate(spec.embed_units):
        x = k.layers.Dense(n, activation="relu", kernel_initializer=k.initializers.HeNormal(seed=spec.seed + i),
                           kernel_regularizer=penalty, name=f"dense{i}")(x)
        x = k.layers.Dropout(spec.embed_dropout, seed=spec.seed + i, name=f"dropout{i}")(x)
    return k.Model([embedding, summary], head(spec, x, spec.embed_l2), name="embed")
