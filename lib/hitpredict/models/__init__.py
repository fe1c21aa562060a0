"""The model zoo: one module per family, each with a binary, regression or multiclass head.

Every builder takes the same :class:`ModelSpec` and returns an uncompiled Keras 2 model
(``tf_keras``, see :mod:`hitpredict.keras_compat`) whose inputs are named ``mel``
(n_mels x frames x 1, normalised) and/or ``summary`` (the summary vector).
"""
from __future__ import annotations

from typing import Any, Callable, Literal, get_args

from hitpredict.models.heads import ModelSpec

ModelFamily = Literal["dummy", "logreg", "mlp", "cnn", "crnn", "inception"]
FAMILIES: tuple[str, ...] = get_args(ModelFamily)


#: Families that read the summary vector; every other family reads the spectrogram.
SUMMARY_FAMILIES = ("dummy", "logreg", "mlp")


def input_names(family: str) -> tuple[str, ...]:
    """The named inputs a ``family`` model reads."""
    return ("summary",) if family in SUMMARY_FAMILIES else ("mel",)


def build_model(family: str, spec: ModelSpec) -> Any:
    """Build the ``family`` model for ``spec``; ``ValueError`` names the known families."""
    from hitpredict.models import baselines, cnn, crnn, inception

    builders: dict[str, Callable[[ModelSpec], Any]] = {
        "dummy": baselines.build_dummy, "logreg": baselines.build_logreg, "mlp": baselines.build_mlp,
        "cnn": cnn.build_cnn, "crnn": crnn.build_crnn, "inception": inception.build_inception,
    }
    if family not in builders:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    return builders[family](spec)


__all__ = ["FAMILIES", "ModelFamily", "input_names", "ModelSpec", "build_model"]
