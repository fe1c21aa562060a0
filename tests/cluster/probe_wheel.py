"""spark-submit main file of the cluster test: where do the driver, the executors' Python workers and
Horovod processes (started the way train_model starts them) import hitpredict from?

Prints one line ``PROBE <json>``: {"driver": {...}, "tasks": [...], "horovod": [...]}, each entry
the ``hitpredict.__file__``, ``sys.executable`` and working directory of that process.
"""
import json
import os
import sys


def where() -> dict:
    """This process: hitpredict's file, the interpreter, the working folder, and that pyarrow, deltalake
    and numpy (from the cluster's site-packages) import."""
    import deltalake
    import numpy
    import pyarrow

    import hitpredict

    return {"hitpredict": hitpredict.__file__, "python": sys.executable,
            "cwd": os.getcwd(), "pid": os.getpid(), "rank": int(os.environ.get("HOROVOD_RANK", "-1")),
            "deps": [pyarrow.__version__, deltalake.__version__, numpy.__version__]}


def in_task(_):
    yield where()


def main() -> None:
    from pyspark.sql import SparkSession

    from hitpredict.train.launcher import horovod_spark_run, worker_env

    spark = SparkSession.builder.getOrCreate()
    try:
        tasks = spark.sparkContext.parallelize(range(2), 2).mapPartitions(in_task).collect()
        horovod = sorted(horovod_spark_run(where, 2, worker_env()), key=lambda r: r["rank"])
        print("PROBE " + json.dumps({"driver": where(), "tasks": tasks, "horovod": horovod}), flush=True)
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
