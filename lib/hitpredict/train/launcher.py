"""Run a training function as N Horovod processes: ``horovod.spark.run`` on open-source
Spark, ``sparkdl.HorovodRunner`` on a Databricks ML runtime (same function either way)."""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any, Callable

log = logging.getLogger(__name__)


def on_databricks_ml() -> bool:
    """True on a Databricks ML runtime, where HorovodRunner is the supported launcher."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ and importlib.util.find_spec("sparkdl") is not None


def worker_env() -> dict[str, str]:
    """The environment of every Horovod process: Keras 2, quiet TensorFlow."""
    # Petastorm 0.13 calls pyarrow APIs that warn on every reader start: keep the logs readable.
    return {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning"}


def run_processes(fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any], num_proc: int) -> list[dict[str, Any]]:
    """Run ``fn(**kwargs)`` in ``num_proc`` Horovod processes; the results sorted by rank
    (HorovodRunner hands back rank 0's result only)."""
    if on_databricks_ml():
        from sparkdl import HorovodRunner  # type: ignore[import-not-found]

        log.info("training with sparkdl.HorovodRunner, np=%d", num_proc)
        return [HorovodRunner(np=num_proc).run(fn, **kwargs)]
    import horovod.spark

    log.info("training with horovod.spark.run, %d gloo processes", num_proc)
    results = horovod.spark.run(fn, kwargs=kwargs, num_proc=num_proc, use_gloo=True, env=worker_env(), verbose=0)
    return sorted(results, key=lambda r: r["rank"])
