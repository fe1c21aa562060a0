"""MLflow: where runs go, what a training run logs, and the registered model."""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from hitpredict.config import MlflowConfig
from hitpredict.logs import verbosity

log = logging.getLogger(__name__)


def configure(config: MlflowConfig) -> str:
    """Point MLflow at the configured tracking store; returns the tracking URI in use.

    A ``file:`` store is MLflow's plain-folder backend (the embedded default); recent
    MLflow releases refuse it unless asked, so this opts in for that case only.
    """
    import mlflow

    uri = config.tracking_uri
    if uri and uri.startswith("file:"):
        path = Path(uri[len("file:"):]).expanduser()
        uri = "file:" + str(path.resolve())
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    if uri:
        mlflow.set_tracking_uri(uri)
    if config.registry_uri:
        mlflow.set_registry_uri(config.registry_uri)
    return mlflow.get_tracking_uri()


@contextlib.contextmanager
def _mlflow_prints_quiet() -> Iterator[None]:
    """At verbosity 0, MLflow's own progress lines ("Successfully registered model ...",
    "Created version ...", written straight to stderr, not through a logger) are hitpredict's to say."""
    from mlflow.utils import logging_utils

    stream = getattr(logging_utils, "MLFLOW_LOGGING_STREAM", None)
    if verbosity() > 0 or stream is None:
        yield
        return
    was = stream.enabled
    stream.enabled = False
    try:
        yield
    finally:
        stream.enabled = was


@dataclass
class LoggedModel:
    """Where :func:`log_run` put a model: its MLflow run, model URI and, when registered, name and version."""

    run_id: str
    model_uri: str
    registered_name: str | None = None
    version: str | None = None


def log_run(config: MlflowConfig, run_name: str, params: dict[str, Any], history: dict[str, list[float]],
            metrics: dict[str, float], artifacts: Path, bundle_dir: Path, model_name: str) -> LoggedModel:
    """One MLflow run: params, per-epoch metrics, test metrics, plots/JSON, and the model
    (registered under ``model_name`` when ``register_model``)."""
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    configure(config)
    mlflow.set_experiment(config.experiment)
    client = MlflowClient()
    with mlflow.start_run(run_name=run_name) as run:
        run_id = run.info.run_id
        now = int(run.info.start_time)
        epoch_metrics = [Metric(key, float(v), now, step) for key, values in history.items()
                         for step, v in enumerate(values)]
        client.log_batch(run_id, metrics=epoch_metrics + [Metric(k, float(v), now, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)[:500]) for k, v in params.items()])
        mlflow.log_artifacts(str(artifacts), artifact_path="evaluation")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={"bundle": str(bundle_dir)}, pip_requirements=["hitpredict"],
        )
    logged = LoggedModel(run_id=run_id, model_uri=info.model_uri)
    if config.register_model:
        with _mlflow_prints_quiet():
            version = mlflow.register_model(info.model_uri, model_name)
        logged.registered_name, logged.version = model_name, str(version.version)
        log.info("registered %s version %s", model_name, version.version)
    return logged
