"""What a run prints: its own progress and summary by default, third-party warnings with ``-v``,
and never the value of a secret.

One verbosity travels with a run, from the command line to every process it starts (Spark's
JVM and Python workers, Horovod's training processes) through the environment:

- ``0`` (default): hitpredict's INFO lines; other libraries' errors only. Python warnings,
  TensorFlow's C++ and AutoGraph logs, Petastorm, MLflow, py4j and Spark's log4j below ERROR
  are hidden.
- ``1`` (``-v``): hitpredict's DEBUG lines and every library's warnings.
- ``2`` (``-vv``): everything at INFO and above, hitpredict at DEBUG.

Whatever the level, a log line that holds the value of an environment variable whose name
contains SECRET, TOKEN, KEY or PASSWORD shows ``***`` in its place.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Mapping, TextIO

#: The environment variable that carries the run's verbosity (0, 1, 2) to the processes it starts.
VERBOSITY_ENV = "HITPREDICT_VERBOSITY"
#: Names of environment variables whose values are never printed.
SECRET_NAME_PARTS = ("SECRET", "TOKEN", "KEY", "PASSWORD")
#: Shorter values ("1", "true") are not treated as secrets: redacting them would garble every line.
MIN_SECRET_LENGTH = 6
#: Loggers of the libraries a run drives.
THIRD_PARTY_LOGGERS = ("py4j", "pyspark", "tensorflow", "absl", "h5py", "petastorm", "horovod", "mlflow",
                       "urllib3", "numba", "matplotlib", "fsspec", "PIL", "git", "alembic", "sqlalchemy",
                       "py.warnings", "librosa", "audioread", "deltalake", "spotipy", "databricks")

LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def verbosity(environ: Mapping[str, str] | None = None) -> int:
    """The run's verbosity as set by :func:`configure` (0 when unset or unreadable)."""
    try:
        return max(0, min(2, int((environ if environ is not None else os.environ).get(VERBOSITY_ENV, "0"))))
    except ValueError:
        return 0


def is_secret_name(name: str) -> bool:
    """True if the environment variable ``name`` holds a secret: its name contains SECRET, TOKEN, KEY or
    PASSWORD, in any case."""
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the secret-named variables of ``environ`` (default: this process's), longest first."""
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items() if is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret value of ``environ`` replaced by ``***``."""
    for value in secret_values(environ):
        if value in text:
            text = text.replace(value, "***")
    return text


class RedactingFormatter(logging.Formatter):
    """A formatter whose lines (message, traceback and all) never hold a secret value."""

    def format(self, record: logging.LogRecord) -> str:
        """The record's line as :class:`logging.Formatter` writes it, secret values replaced by ``***``."""
        return redact(super().format(record))


def child_environment(level: int) -> dict[str, str]:
    """Variables that make the processes a run starts (Spark workers, Horovod processes, the
    TensorFlow runtime) as quiet as ``level`` asks; they must be set before those start."""
    env = {VERBOSITY_ENV: str(level), "AUTOGRAPH_VERBOSITY": "0",
           # TensorFlow's C++ log: 3 hides even "E ... oneDNN supports DT_HALF only on ..." notices.
           "TF_CPP_MIN_LOG_LEVEL": "3" if level == 0 else "1" if level == 1 else "0",
           "MLFLOW_LOGGING_LEVEL": "ERROR" if level == 0 else "WARNING" if level == 1 else "INFO"}
    if level == 0:
        env["PYTHONWARNINGS"] = "ignore"
    return env


def _levels(level: int) -> tuple[int, int]:
    """(hitpredict's level, every other logger's level)."""
    return ((logging.INFO, logging.ERROR) if level == 0 else (logging.DEBUG, logging.WARNING) if level == 1
            else (logging.DEBUG, logging.INFO))


def configure(level: int = 0, stream: TextIO | None = None) -> None:
    """Set up this process's logging, warnings and environment for ``level`` (see the module doc).

    A root handler (and the root level) is set only when there is none: a host such as pytest or
    a notebook keeps its own. The named loggers' levels, the warning filters and the environment
    are set either way.
    """
    level = max(0, min(2, level))
    if level == 0:
        os.environ.update(child_environment(0))
    else:   # -v: keep what the user exported, fill in the rest
        for key, value in child_environment(level).items():
            if key in (VERBOSITY_ENV, "TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL"):
                os.environ[key] = value
            else:
                os.environ.setdefault(key, value)
        if os.environ.get("PYTHONWARNINGS") in ("ignore", "ignore::FutureWarning,ignore::DeprecationWarning"):
            del os.environ["PYTHONWARNINGS"]
    ours, others = _levels(level)
    root = logging.getLogger()
    if not root.handlers:   # a host with its own handlers (pytest, a notebook) keeps its root level too
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(RedactingFormatter(LINE_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(others)
    logging.getLogger("hitpredict").setLevel(ours)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(others)
    if level == 0:
        warnings.simplefilter("ignore")
        warnings.filterwarnings("default", module=r"hitpredict(\.|$)")
    else:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        logging.captureWarnings(True)
    quiet_tensorflow(level)


def quiet_tensorflow(level: int | None = None) -> None:
    """AutoGraph and TensorFlow's Python logger as quiet as ``level`` asks, when TensorFlow is loaded."""
    if "tensorflow" not in sys.modules:
        return
    level = verbosity() if level is None else level
    tf = sys.modules["tensorflow"]
    try:
        tf.autograph.set_verbosity(0)
        tf.get_logger().setLevel(_levels(level)[1])
    except AttributeError:   # a partly imported module
        pass


def configure_worker() -> int:
    """In a process the run started (a Horovod training process): the run's verbosity, a
    redacting root handler, quiet TensorFlow. Returns the verbosity."""
    level = verbosity()
    configure(level)
    return level
