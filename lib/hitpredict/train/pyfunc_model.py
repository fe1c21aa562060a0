"""The MLflow pyfunc face of a model bundle ("models from code": MLflow loads this file).

``mlflow.pyfunc.load_model(uri).predict(df)`` takes a DataFrame with the stored feature
columns ``mel`` (float16 bytes) and ``summary`` and returns one column per output.
"""
from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd


class HitpredictModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from hitpredict.train.bundle import ModelBundle

        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        out = self.bundle.predict(model_input["mel"].tolist(), model_input["summary"].tolist())
        names = self.bundle.label_names if self.bundle.spec.task == "multiclass" else [
            "prob_popular" if self.bundle.spec.task == "binary" else "popularity_pred"]
        return pd.DataFrame(out, columns=names, index=model_input.index)


mlflow.models.set_model(HitpredictModel())
