"""The run is on the versions its environment pins, in the driver and in Spark's Python workers.

`make test` checks conf/constraints.txt (pyspark 4). `make test-spark35` sets
HITPREDICT_CONSTRAINTS=conf/constraints-spark35.txt, so the same tests prove that run used pyspark 3.5
and the pandas/pyarrow/numpy of Databricks 15.4 LTS ML, not the main .venv's copies behind them on sys.path.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("pyspark", "pandas", "pyarrow", "numpy")


def pinned_versions() -> dict[str, str]:
    """name -> exact version from the constraints file this environment was installed from."""
    path = ROOT / os.environ.get("HITPREDICT_CONSTRAINTS", "conf/constraints.txt")
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    missing = [name for name in CHECKED if name not in pins]
    assert not missing, f"{path} pins no {missing}"
    return pins


def test_the_driver_imports_the_pinned_versions():
    pins = pinned_versions()
    for name in CHECKED:
        module = importlib.import_module(name)
        assert module.__version__ == pins[name], f"{name} {module.__version__} from {module.__file__}, pinned {pins[name]}"
        assert importlib.metadata.version(name) == pins[name], name
    if "spark35" in os.environ.get("HITPREDICT_CONSTRAINTS", ""):
        import pyspark

        assert pyspark.__version__.startswith("3.5."), pyspark.__version__


def test_the_jvm_and_the_python_workers_run_the_pinned_versions(spark):
    pins = pinned_versions()
    assert spark.version == pins["pyspark"]

    def versions(batches):
        import numpy
        import pandas
        import pyarrow
        import pyspark

        for _ in batches:
            yield pandas.DataFrame({"prefix": [sys.prefix], "pyspark": [pyspark.__version__],
                                    "pandas": [pandas.__version__], "pyarrow": [pyarrow.__version__],
                                    "numpy": [numpy.__version__]})

    schema = "prefix string, pyspark string, pandas string, pyarrow string, numpy string"
    rows = [row.asDict() for row in spark.range(4, numPartitions=2).mapInPandas(versions, schema).collect()]
    assert len(rows) == 2
    expected = {"prefix": sys.prefix, **{name: pins[name] for name in CHECKED}}
    assert all(row == expected for row in rows), rows
