"""Baselines on the summary vector: dummy (the prior only), logistic/linear regression, MLP."""
from __future__ import annotations

from typing import Any

from hitpredict.keras_compat import keras
from hitpredict.models.heads import ModelSpec, head, summary_input


def build_dummy(spec: ModelSpec) -> Any:
    """Ignores the audio: only the output bias learns, i.e. the class prior or the mean.

    Input ``summary`` (batch, ``spec.summary_size``), multiplied by zero; output as :func:`head`
    gives it, (batch, 1) or (batch, n_classes). An uncompiled Keras 2 model named ``dummy``.
    """
    k = keras()
    inputs = summary_input(spec)
    nothing = k.layers.Lambda(lambda x: x * 0.0, name="ignore_audio")(inputs)
    return k.Model(inputs, head(spec, nothing), name="dummy")


def build_logreg(spec: ModelSpec) -> Any:
    """Logistic (binary), linear (regression) or softmax (multiclass) regression on the summary vector.

    Input ``summary`` (batch, ``spec.summary_size``); output (batch, 1) or (batch, n_classes). An
    uncompiled Keras 2 model named ``logreg``.
    """
    inputs = summary_input(spec)
    return keras().Model(inputs, head(spec, inputs), name="logreg")


def build_mlp(spec: ModelSpec, units: tuple[int, ...] = (64, 32), dropout: float = 0.2) -> Any:
    """A multilayer perceptron on the summary vector: one ReLU layer per entry of ``units`` (its width),
    each followed by ``dropout`` (0-1).

    Input ``summary`` (batch, ``spec.summary_size``); output (batch, 1) or (batch, n_classes). An
    uncompiled Keras 2 model named ``mlp``.
    """
    k = keras()
    inputs = summary_input(spec)
    x = inputs
    for i, n in enumerate(units):
        x = k.layers.Dense(n, activation="relu", kernel_initializer=k.initializers.HeNormal(seed=spec.seed + i),
                           name=f"dense{i}")(x)
        x = k.layers.Dropout(dropout, seed=spec.seed + i, name=f"dropout{i}")(x)
    return k.Model(inputs, head(spec, x), name="mlp")
