"""The MLflow pyfunc face of a model bundle ("models from code": MLflow loads this file).

``mlflow.pyfunc.load_model(uri).predict(df)`` takes a DataFrame with the stored feature
columns ``mel`` (float16 bytes) and ``summary`` and returns one column per output.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from hitpredict.targets import target_named
from hitpredict.train.bundle import ModelBundle


class HitpredictModel(PythonModel):
    """A :class:`~hitpredict.train.bundle.ModelBundle` as an MLflow pyfunc model."""

    def load_context(self, context: Any) -> None:
        """Load the bundle folder MLflow stored as the ``bundle`` artifact."""
        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """``model_input`` (n rows: ``mel`` float16 bytes, ``summary``) -> the model's outputs, n rows, same
        index: the target's scores column (``prob_popular`` 0-1, ``popularity_pred``), or one probability
        column per class name for a multiclass target."""
        out = self.bundle.predict(model_input["mel"].tolist(), model_input["summary"].tolist())
        names = self.bundle.label_names if self.bundle.spec.task == "multiclass" else [
            target_named(self.bundle.target).output_column]
        return pd.DataFrame(out, columns=names, index=model_input.index)


set_model(HitpredictModel())
