"""The wheel runs without the repository: it is built from a clean copy of the source, installed with pip
into a fresh virtualenv that cannot see the repository's editable install, and ``hitpredict demo --conf
local`` runs from it in an empty folder. Its metadata leaves pyspark to the cluster, and it carries one
console entry point per job (``hitpredict.jobs``), the same ones ``setup.py`` declares.

The fresh venv gets the heavy third-party stack (TensorFlow, Horovod, pyspark...) by a ``.pth`` line naming
the repository venv's site-packages. Python does not read the ``.pth`` files of a folder that a ``.pth``
line adds, so the repository's ``__editable__.hitpredict-0.1.0.pth`` (which points at ``lib/``) stays
unread there; a recorder in every Python process of the demo run proves where hitpredict came from.
"""
from __future__ import annotations

import ast
import configparser
import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from email.parser import Parser
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from hitpredict import __version__, cli, jobs

ROOT = Path(__file__).resolve().parents[1]
#: The repository venv's site-packages (the tests run in it): the fresh venv borrows its third-party packages.
REPO_SITE = Path(sysconfig.get_paths()["purelib"])
WHEEL_NAME = f"hitpredict-{__version__}-py3-none-any.whl"
#: The job entry points the Databricks bundle and spark-submit users rely on (the brief's contract).
JOB_ENTRY_POINTS = ["hitpredict-ingest-catalogue", "hitpredict-fetch-previews", "hitpredict-extract-features",
                    "hitpredict-build-dataset", "hitpredict-train-model", "hitpredict-score-catalogue",
                    "hitpredict-score-folder", "hitpredict-report", "hitpredict-demo"]

_BUILT: dict[str, Path] = {}


def build_wheel(out_dir: Path) -> Path:
    """Build the wheel from a clean copy of ``setup.py`` and ``lib/`` (no ``build/`` leftovers, no
    ``__pycache__``) into ``out_dir``, as ``make wheel`` does; once per test session. Returns its path."""
    if "wheel" in _BUILT:
        return _BUILT["wheel"]
    source = out_dir / "source"
    source.mkdir(parents=True)
    shutil.copy2(ROOT / "setup.py", source / "setup.py")
    shutil.copytree(ROOT / "lib", source / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", "--no-index", "-w", str(out_dir / "dist"), str(source)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    built = sorted((out_dir / "dist").glob("*.whl"))
    assert [p.name for p in built] == [WHEEL_NAME]
    _BUILT["wheel"] = built[0]
    return built[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed by pip (``--no-deps``: the dependencies come from the repository
    venv's site-packages through a ``.pth`` line, whose own ``.pth`` files Python leaves unread)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip())
    (site / "zz_repo_venv_packages.pth").write_text(f"{REPO_SITE}\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(python),
                           "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


def clean_env(venv: Path, **extra: str) -> dict[str, str]:
    """This environment without anything that points into the repository, with the venv's Python for Spark."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV", "PYTHONHOME")}
    python = str(venv / "bin" / "python")
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYSPARK_PYTHON=python,
               PYSPARK_DRIVER_PYTHON=python, **extra)
    return env


def _setup_console_scripts() -> list[str]:
    """``CONSOLE_SCRIPTS`` as setup.py writes it (read, not run: running setup.py would build)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CONSOLE_SCRIPTS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no CONSOLE_SCRIPTS list")


def test_setup_declares_exactly_the_job_table():
    assert _setup_console_scripts() == jobs.console_scripts()
    assert list(jobs.JOBS) == JOB_ENTRY_POINTS
    for name, (command, function) in jobs.JOBS.items():
        assert command in cli.COMMANDS and name == f"hitpredict-{command.replace('_', '-')}"
        assert function.__module__ == "hitpredict.jobs"


def test_a_job_returns_on_success_and_exits_with_the_status_otherwise(monkeypatch):
    calls = []
    statuses = iter([0, 2])
    monkeypatch.setattr(cli, "main", lambda argv: calls.append(argv) or next(statuses))   # what cli.job_main runs
    monkeypatch.setattr(sys, "argv", ["hitpredict-report", "--conf", "databricks", "--top", "5"])
    assert jobs.report() is None   # no SystemExit(0): a Databricks wheel task runs it inside its own Python
    with pytest.raises(SystemExit) as failed:
        jobs.train_model()
    assert failed.value.code == 2
    assert calls == [["report", "--conf", "databricks", "--top", "5"], ["train_model", "--conf", "databricks",
                                                                         "--top", "5"]]


def test_the_wheel_holds_the_package_configs_and_entry_points_and_leaves_pyspark_to_the_cluster(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"hitpredict-{__version__}.dist-info"
        entry_points = configparser.ConfigParser(delimiters=("=",))
        entry_points.read_string(archive.read(f"{info}/entry_points.txt").decode())
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())

    # Every module of lib/hitpredict, the shipped configs and the type marker; nothing from outside the package.
    source = {p.relative_to(ROOT / "lib").as_posix() for p in (ROOT / "lib" / "hitpredict").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    packaged = {n for n in names if not n.startswith(f"{info}/")}
    assert source == packaged
    assert {"hitpredict/configs/local.yaml", "hitpredict/configs/cluster.yaml", "hitpredict/configs/databricks.yaml",
            "hitpredict/py.typed", "hitpredict/jobs.py"} <= packaged

    scripts = {name: target.strip() for name, target in entry_points["console_scripts"].items()}
    assert scripts == dict(item.split("=", 1) for item in jobs.console_scripts())

    requirements = [Requirement(text) for text in metadata.get_all("Requires-Dist")]
    spark = [r for r in requirements if r.name == "pyspark"]
    assert spark and all(r.marker is not None and r.marker.evaluate({"extra": "spark"})
                         and not r.marker.evaluate({"extra": ""}) for r in spark), [str(r) for r in spark]
    assert all(not str(r.specifier).startswith(("==", "<", "~=")) for r in spark)   # a floor, never a pin
    needed = [r for r in requirements if r.marker is None]
    assert all("==" not in str(r.specifier) for r in needed), [str(r) for r in needed]   # loose floors only
    unmet = []
    for r in needed:   # the pinned stack (conf/constraints.txt, this venv) meets every floor
        try:
            installed = version(r.name)
        except PackageNotFoundError:
            installed = None
        if installed is None or not r.specifier.contains(installed, prereleases=True):
            unmet.append(f"{r} (installed: {installed})")
    assert not unmet, unmet


def test_every_entry_point_of_the_installed_wheel_runs(venv, tmp_path):
    env = clean_env(venv)
    running = {name: subprocess.Popen([str(venv / "bin" / name), "--help"], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
               for name in ["hitpredict", *JOB_ENTRY_POINTS]}
    for name, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{name}: {err[-2000:]}"
        command = jobs.JOBS[name][0] if name in jobs.JOBS else None
        assert out.startswith(f"usage: hitpredict {command} " if command else "usage: hitpredict "), (name, out)


# Installed in every Python process of the demo run (driver, Spark workers, Horovod processes) through
# PYTHONPATH: records where each one really imports hitpredict from, found the way it would be anyway.
RECORDER = """\
import importlib.abc, importlib.machinery, json, os, sys

class _RecordHitpredict(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "hitpredict":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        with open(os.environ["HITPREDICT_TEST_IMPORTS"], "a") as out:
            out.write(json.dumps({"pid": os.getpid(), "origin": spec and spec.origin}) + "\\n")
        return spec

sys.meta_path.insert(0, _RecordHitpredict())
"""


@pytest.mark.slow
def test_the_demo_runs_from_the_installed_wheel_in_an_empty_folder(venv, tmp_path):
    hook, empty = tmp_path / "hook", tmp_path / "empty"
    hook.mkdir()
    empty.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDER)
    imports = tmp_path / "imports.jsonl"
    env = clean_env(venv, PYTHONPATH=str(hook), HITPREDICT_TEST_IMPORTS=str(imports))
    # `hitpredict demo --conf local` as the README says, kept short like the other demo tests: a small sample,
    # one model (logistic regression), one epoch, one Horovod process. Every path stays the shipped default,
    # relative to the empty folder.
    command = [str(venv / "bin" / "hitpredict"), "demo", "--conf", "local",
               "--set", "sample.tracks=48", "--set", "sample.artists=8", "--set", "sample.seconds=6",
               "--set", "sample.preview_port=0", "--set", "audio.clip_seconds=6", "--set", "audio.min_seconds=1",
               "--set", "train.epochs=1", "--set", "train.num_proc=1", "--set", "train.bootstrap_rounds=20",
               "--set", "train.augment.crop_frames=null", "--set", "demo.models={popular: logreg}"]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=empty, env=env,
                          timeout=1500)
    output = done.stdout
    assert done.returncode == 0, output[-5000:]
    assert "demo finished in" in output and "logreg (binary) on ds-" in output

    rows = {}
    for line in output.splitlines():   # the table listing: name, version, files, rows, location
        parts = line.split()
        if len(parts) == 5 and parts[4].startswith(str(empty / "lakehouse")):
            rows[parts[0]] = parts[3]
    assert {name: rows.get(name) for name in ("catalogue", "previews", "features", "examples", "datasets",
                                              "scores")} == {"catalogue": "48", "previews": "48", "features": "48",
                                                             "examples": "48", "datasets": "1", "scores": "48"}
    report = empty / "data" / "report" / "report.html"
    assert f"report: {report}" in output and report.stat().st_size > 0
    with open(empty / "data" / "report" / "scores.csv", newline="") as scores:
        assert len(list(csv.reader(scores))) == 1 + 48   # a header and every track

    records = [json.loads(line) for line in imports.read_text().splitlines()]
    installed = str(venv / "lib")
    assert records and all(r["origin"] and r["origin"].startswith(installed) for r in records), records
    assert not any(str(ROOT) in (r["origin"] or "") for r in records)
    assert len({r["pid"] for r in records}) >= 2, records   # the driver and the processes Spark started
