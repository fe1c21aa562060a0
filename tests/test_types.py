"""The static type check that ``make test`` runs first (``mypy``, configured by mypy.ini) catches what
no engine-specific test would: a stage calling a lake method that one engine lacks."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mypy(source: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Type-check one module that uses hitpredict, with the project's settings."""
    module = tmp_path / "uses_the_lake.py"
    module.write_text(source)
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "mypy.ini"),
                           "--cache-dir", str(tmp_path / "cache"), str(module)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def calling(method: str) -> str:
    """A module whose function reads a table through ``Lake.<method>``, as a stage would."""
    return ("import pyarrow as pa\n"
            "from hitpredict.lake import Lake\n\n\n"
            "def examples(lake: Lake) -> pa.Table:\n"
            f"    return lake.{method}('examples')\n")


def test_a_lake_method_the_interface_lacks_is_a_type_error(tmp_path):
    """The call that broke training under ``lake.engine: delta`` (a method only DeltaRsLake had)."""
    found = mypy(calling("read_arrow_only_one_engine_has"), tmp_path)
    assert found.returncode == 1, found.stdout + found.stderr
    assert '"Lake" has no attribute "read_arrow_only_one_engine_has"' in found.stdout


def test_what_stages_call_on_a_lake_is_declared_on_it(tmp_path):
    found = mypy(calling("read_arrow"), tmp_path)
    assert found.returncode == 0, found.stdout + found.stderr
