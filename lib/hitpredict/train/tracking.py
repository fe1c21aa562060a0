"""MLflow: where runs go, what a training run logs, and the registered model."""
from __future__ import annotations

import contextlib
import fcntl
import gc
import io
import json
import logging
import os
import pkgutil
import sqlite3
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from hitpredict import __version__ as hitpredict_version
from hitpredict.config import MlflowConfig
from hitpredict.errors import HitpredictError
from hitpredict.logs import verbosity
from hitpredict.targets import target_named
from hitpredict.train.bundle import BUNDLE_FILE

log = logging.getLogger(__name__)


#: The folder, beside a SQLite tracking database, where new experiments keep their artifacts
#: (``mlflow.artifact_location`` overrides it), and the plain-folder store older releases wrote there.
ARTIFACTS_FOLDER, LEGACY_FOLDER = "mlartifacts", "mlruns"


class TrackingError(HitpredictError):
    """The configured tracking store cannot be used as it is; one line that says what to do."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (``PATH`` relative to the working folder, or
    absolute as ``sqlite:////abs/path``), made absolute; ``None`` for other URIs and in-memory databases."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path).expanduser().resolve() if path and path != ":memory:" else None


def _is_file_store(folder: Path) -> bool:
    """Whether ``folder`` holds MLflow's plain-folder store: experiment folders with ``meta.yaml``, or a registry."""
    return folder.is_dir() and (any(folder.glob("*/meta.yaml")) or (folder / "models").is_dir())


def migrate_file_store(source: Path, database: Path) -> None:
    """Copy every experiment, run, logged model and registered model of the plain-folder store ``source``
    into the new SQLite database ``database`` with MLflow's own ``mlflow migrate-filestore`` code. The
    artifacts stay in ``source`` (the database points at them). Written to a temporary file and renamed,
    so a failed migration leaves no half-filled database."""
    from mlflow.store.fs2db import migrate

    partial = database.with_name(database.name + ".migrating")
    leftovers = [partial.with_name(partial.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    for path in leftovers:
        path.unlink(missing_ok=True)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):   # MLflow prints its summary table
            migrate(source, f"sqlite:///{partial}", progress=False)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and MLflow raise many kinds
        for path in leftovers:
            path.unlink(missing_ok=True)
        raise TrackingError(f"cannot migrate the MLflow runs in {source} to {database}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}; run `mlflow migrate-filestore "
                            f"--source {source} --target sqlite:///{database}` to see why") from None
    gc.collect()   # close the migration's pooled connections, then fold its write-ahead log into the file
    with contextlib.closing(sqlite3.connect(partial)) as db:
        db.execute("PRAGMA journal_mode=DELETE")
    os.replace(partial, database)
    log.info("migrated the MLflow runs and models of %s into %s (their artifacts stay in %s)", source, database, source)
    log.debug("%s", printed.getvalue())


def configure(config: MlflowConfig) -> str:
    """Point MLflow at the configured tracking store; returns the tracking URI in use.

    A ``sqlite:///`` store (the embedded default) is made absolute and its folder created; when the database
    does not exist yet and an older release's plain-folder store ``mlruns/`` sits beside it, that store is
    migrated into it first (:func:`migrate_file_store`). A ``file:`` store is refused (``TrackingError``)
    unless the user opted in with ``MLFLOW_ALLOW_FILE_STORE=true``: MLflow 3 keeps it in maintenance mode.
    """
    import mlflow

    uri = config.tracking_uri
    database = sqlite_path(uri) if uri else None
    if uri and uri.startswith("file:"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
            raise TrackingError(
                f"mlflow.tracking_uri {uri}: MLflow 3 keeps plain-folder stores in maintenance mode; use "
                f"sqlite:///mlflow.db (hitpredict migrates a ./mlruns beside it on first use, or run `mlflow "
                f"migrate-filestore --source ./mlruns --target sqlite:///mlflow.db`), "
                f"or set MLFLOW_ALLOW_FILE_STORE=true")
        uri = "file:" + str(Path(uri[len("file:"):]).expanduser().resolve())
    elif database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
        legacy = database.parent / LEGACY_FOLDER
        if not database.exists() and _is_file_store(legacy):
            # Two runs starting at once: one migrates, the other waits, then finds the database.
            with open(database.with_name(database.name + ".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not database.exists():
                    migrate_file_store(legacy, database)
        uri = f"sqlite:///{database}"
    if uri:
        mlflow.set_tracking_uri(uri)
    if config.registry_uri:
        mlflow.set_registry_uri(config.registry_uri)
    return mlflow.get_tracking_uri()


def experiment_id(config: MlflowConfig) -> str:
    """The id of ``config.experiment``, created if missing with its artifacts in ``config.artifact_location``
    (default: ``mlartifacts/`` beside a SQLite database, the server's choice otherwise)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(config.experiment)
    if found is not None:
        return str(found.experiment_id)
    location = config.artifact_location
    database = sqlite_path(mlflow.get_tracking_uri())
    if location is None and database is not None:
        location = (database.parent / ARTIFACTS_FOLDER).as_uri()
    elif location is not None and "://" not in location and not location.startswith("file:"):
        location = Path(location).expanduser().resolve().as_uri()
    try:
        return str(client.create_experiment(config.experiment, artifact_location=location))
    except MlflowException:   # created by another process since the look-up
        again = client.get_experiment_by_name(config.experiment)
        if again is None:
            raise
        return str(again.experiment_id)


def model_signature(bundle: dict[str, Any]) -> Any:
    """The pyfunc's MLflow signature for a bundle's ``bundle.json`` content: any of the inputs ``audio``
    (bytes; base64 in JSON), ``path`` (a file the server can read), or the stored features ``mel`` (float16
    bytes) with ``summary``, ``embedding`` and ``tags`` (floats); the outputs: the target's score column, or one probability per class."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    inputs = Schema([ColSpec(DataType.binary, "audio", required=False),
                     ColSpec(DataType.string, "path", required=False),
                     ColSpec(DataType.binary, "mel", required=False),
                     ColSpec(AnyType(), "summary", required=False),
                     # the pretrained vectors beside mel, for the embed and fusion families
                     ColSpec(AnyType(), "embedding", required=False),
                     ColSpec(AnyType(), "tags", required=False)])
    names = bundle.get("label_names") if bundle["spec"]["task"] == "multiclass" else [
        target_named(bundle["target"]).output_column]
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec(DataType.double, str(n)) for n in names or []]))


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


def model_code_file(directory: Path) -> str:
    """``pyfunc_model.py`` (the registered model's code, MLflow models-from-code) as a real file: this
    package's own, or, when hitpredict was imported from a zip (a wheel shipped with
    ``spark-submit --py-files``, where ``__file__`` is a path inside the archive), a copy in ``directory``."""
    own = Path(__file__).with_name("pyfunc_model.py")
    if own.is_file():
        return str(own)
    code = pkgutil.get_data(__package__ or "hitpredict.train", "pyfunc_model.py")
    if code is None:
        raise HitpredictError(f"cannot read pyfunc_model.py from {own.parent}")
    copy = directory / "pyfunc_model.py"
    copy.write_bytes(code)
    return str(copy)


def log_run(config: MlflowConfig, run_name: str, params: dict[str, Any], history: dict[str, list[float]],
            metrics: dict[str, float], artifacts: Path, bundle_dir: Path, model_name: str) -> LoggedModel:
    """One MLflow run: params, per-epoch metrics, test metrics, plots/JSON, and the model
    (registered under ``model_name`` when ``register_model``)."""
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    configure(config)
    mlflow.set_experiment(experiment_id=experiment_id(config))
    client = MlflowClient()
    with mlflow.start_run(run_name=run_name) as run:
        run_id = run.info.run_id
        now = int(run.info.start_time)
        epoch_metrics = [Metric(key, float(v), now, step) for key, values in history.items()
                         for step, v in enumerate(values)]
        client.log_batch(run_id, metrics=epoch_metrics + [Metric(k, float(v), now, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)[:500]) for k, v in params.items()])
        mlflow.log_artifacts(str(artifacts), artifact_path="evaluation")
        with tempfile.TemporaryDirectory(prefix="hitpredict-model-code-") as tmp, warnings.catch_warnings():
            # the signature is declared; an input example would have to carry an audio file
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=model_code_file(Path(tmp)),
                artifacts={"bundle": str(bundle_dir)}, pip_requirements=[f"hitpredict=={hitpredict_version}"],
                signature=model_signature(json.loads((Path(bundle_dir) / BUNDLE_FILE).read_text())),
            )
    logged = LoggedModel(run_id=run_id, model_uri=info.model_uri)
    if config.register_model:
        with _mlflow_prints_quiet():
            version = mlflow.register_model(info.model_uri, model_name)
        logged.registered_name, logged.version = model_name, str(version.version)
        log.info("registered %s version %s", model_name, version.version)
    return logged
