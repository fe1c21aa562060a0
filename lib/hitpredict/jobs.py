"""The wheel's console entry points: one per job, ``hitpredict-<command>`` = ``hitpredict <command> ARGS...``.

A cluster (a Databricks ``python_wheel_task``, a shell on an edge node) runs a job by its entry
point, e.g. ``hitpredict-score-catalogue --conf databricks --set lake.catalog=main``. Each function
here is one such entry point: it selects Keras 2 (before anything imports TensorFlow) and runs the
command with this process's arguments through :func:`hitpredict.cli.job_main`. :data:`JOBS` is the table
of them; ``setup.py`` writes the same names into the wheel (a test keeps the two equal: setup.py
cannot import this module, which needs the package's dependencies).

A job that succeeds returns normally (``None``, exit status 0): a Databricks wheel task runs the entry
point inside the driver's Python, where a ``SystemExit`` even with status 0 need not read as
success. A job that fails exits with the command's status (2: a user error, 1: a bug).
"""
from __future__ import annotations

from typing import Callable

from hitpredict.cli import job_main as run_job


def ingest_catalogue() -> None:
    """``hitpredict-ingest-catalogue ARGS`` = ``hitpredict ingest_catalogue ARGS``."""
    run_job("ingest_catalogue")


def fetch_previews() -> None:
    """``hitpredict-fetch-previews ARGS`` = ``hitpredict fetch_previews ARGS``."""
    run_job("fetch_previews")


def extract_features() -> None:
    """``hitpredict-extract-features ARGS`` = ``hitpredict extract_features ARGS``."""
    run_job("extract_features")


def build_dataset() -> None:
    """``hitpredict-build-dataset ARGS`` = ``hitpredict build_dataset ARGS``."""
    run_job("build_dataset")


def train_model() -> None:
    """``hitpredict-train-model ARGS`` = ``hitpredict train_model ARGS``."""
    run_job("train_model")


def score_catalogue() -> None:
    """``hitpredict-score-catalogue ARGS`` = ``hitpredict score_catalogue ARGS``."""
    run_job("score_catalogue")


def score_folder() -> None:
    """``hitpredict-score-folder ARGS`` = ``hitpredict score_folder ARGS``."""
    run_job("score_folder")


def report() -> None:
    """``hitpredict-report ARGS`` = ``hitpredict report ARGS``."""
    run_job("report")


def demo() -> None:
    """``hitpredict-demo ARGS`` = ``hitpredict demo ARGS``."""
    run_job("demo")


#: Console entry point name -> (the ``hitpredict`` command it runs, its function). ``setup.py`` declares
#: exactly these (as ``NAME=hitpredict.jobs:FUNCTION``), beside ``hitpredict=hitpredict.cli:main``.
JOBS: dict[str, tuple[str, Callable[[], None]]] = {
    f"hitpredict-{command.replace('_', '-')}": (command, function)
    for command, function in [
        ("ingest_catalogue", ingest_catalogue),
        ("fetch_previews", fetch_previews),
        ("extract_features", extract_features),
        ("build_dataset", build_dataset),
        ("train_model", train_model),
        ("score_catalogue", score_catalogue),
        ("score_folder", score_folder),
        ("report", report),
        ("demo", demo),
    ]
}


def console_scripts() -> list[str]:
    """The wheel's ``console_scripts`` entry points, as ``setup.py`` must declare them."""
    return ["hitpredict=hitpredict.cli:main",
            *(f"{name}=hitpredict.jobs:{function.__name__}" for name, (_, function) in JOBS.items())]
