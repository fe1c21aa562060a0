"""Run a training function as N Horovod processes: ``horovod.spark.run`` on open-source
Spark, ``sparkdl.HorovodRunner`` on a Databricks ML runtime (same function either way)."""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import subprocess
import sys
from typing import Any, Callable

from hitpredict.keras_compat import KERAS2_ENVIRONMENT
from hitpredict.logs import child_environment, verbosity

log = logging.getLogger(__name__)


def on_databricks_ml() -> bool:
    """True on a Databricks ML runtime, where HorovodRunner is the supported launcher."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ and importlib.util.find_spec("sparkdl") is not None


#: What ``--py-files`` may ship onto executors' Python path (pyspark adds no other kind there).
_PY_FILE_KINDS = (".zip", ".egg", ".jar")


def shipped_python_path() -> list[str]:
    """The Python files the job shipped (``spark.submit.pyFiles``: ``spark-submit --py-files``) as the
    Horovod processes find them, to put first on their PYTHONPATH.

    ``horovod.spark.run`` starts each process in its executor's working folder, where Spark put the
    shipped files, but with the *driver's* PYTHONPATH, whose paths only the driver's machine has:
    on a cluster those processes would import the driver's copy, or nothing. So each file is named
    relative to that folder (a cluster's executors), then under the driver's SparkFiles folder
    (local mode, where executors share the driver's). Empty without an active SparkContext.
    """
    try:
        from pyspark import SparkContext, SparkFiles
    except ImportError:
        return []
    context = SparkContext._active_spark_context
    if context is None:
        return []
    names = [os.path.basename(p) for p in context.getConf().get("spark.submit.pyFiles", "").split(",")
             if p and p.lower().endswith(_PY_FILE_KINDS)]
    return [*names, *(os.path.join(SparkFiles.getRootDirectory(), name) for name in names)]


def worker_env() -> dict[str, str]:
    """The environment of every Horovod process: Keras 2, a fixed ``PYTHONHASHSEED``, the run's verbosity
    (quiet TensorFlow, AutoGraph, MLflow and Python warnings by default: Petastorm 0.13 calls pyarrow APIs
    that warn on every reader start), and the job's shipped Python files first on PYTHONPATH
    (:func:`shipped_python_path`)."""
    env = {**os.environ, **KERAS2_ENVIRONMENT, **child_environment(verbosity())}
    # A fixed string hash: otherwise set orders inside the processes (Petastorm's column sets among them) change
    # from run to run, and so does the trained model. A seed the job was given stays.
    env.setdefault("PYTHONHASHSEED", "0")
    shipped = shipped_python_path()
    if shipped:
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([*shipped, *rest])
    return env


# Asked in a fresh interpreter: what horovod.tensorflow itself answers about its build.
_GLOO_PROBE = "import horovod.tensorflow as h; print(bool(h.gloo_built()))"


@functools.lru_cache(maxsize=1)
def gloo_built_in_fresh_process() -> bool:
    """Whether horovod was built with gloo, asked once per process in a *spawned* interpreter.

    Horovod's own check forks the caller and imports horovod.tensorflow in the child. Forked from
    a driver that already holds the Spark gateway's and TensorFlow's threads, that child can die
    before it answers, and horovod then fails with a bare ``queue.Empty`` (seen on CI; horovod
    issue #2161). A spawned interpreter inherits no threads.
    """
    probe = subprocess.run([sys.executable, "-c", _GLOO_PROBE], env=worker_env(), capture_output=True,
                           text=True, timeout=600, check=False)
    answer = probe.stdout.strip().splitlines()[-1:] == ["True"]
    if not answer:
        log.warning("horovod gloo probe (exit %d) said %r: %s", probe.returncode, probe.stdout.strip(),
                    (probe.stderr.strip().splitlines() or [""])[-1])
    return answer


def _use_fresh_process_gloo_check() -> None:
    """Point horovod's launchers at :func:`gloo_built_in_fresh_process` instead of their fork check."""
    import horovod.runner.launch
    import horovod.spark.runner

    def gloo_built(verbose: bool = False) -> bool:
        return gloo_built_in_fresh_process()

    horovod.runner.launch.gloo_built = gloo_built
    horovod.spark.runner.gloo_built = gloo_built


def horovod_spark_run(fn: Callable[..., Any], num_proc: int, env: dict[str, str], *,
                      args: tuple = (), kwargs: dict[str, Any] | None = None) -> list[Any]:
    """``horovod.spark.run`` with gloo, every process's result in rank order as horovod gives it."""
    import horovod.spark

    _use_fresh_process_gloo_check()
    return horovod.spark.run(fn, args=args, kwargs=kwargs or {}, num_proc=num_proc, use_gloo=True, env=env,
                            verbose=0)


def run_processes(fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any], num_proc: int) -> list[dict[str, Any]]:
    """Run ``fn(**kwargs)`` in ``num_proc`` Horovod processes; the results sorted by rank
    (HorovodRunner hands back rank 0's result only)."""
    if on_databricks_ml():
        from sparkdl import HorovodRunner  # type: ignore[import-not-found]

        log.info("training with sparkdl.HorovodRunner, np=%d", num_proc)
        return [HorovodRunner(np=num_proc).run(fn, **kwargs)]
    log.info("training with horovod.spark.run, %d gloo processes", num_proc)
    results = horovod_spark_run(fn, num_proc, worker_env(), kwargs=kwargs)
    return sorted(results, key=lambda r: r["rank"])
