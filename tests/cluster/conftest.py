"""Fixtures of the cluster test (``make cluster-test``): the shipped wheel, a throwaway Python that
cannot see the repository's editable install, and a standalone Spark cluster on 127.0.0.1 whose
every process is stopped by pid at the end, pass or fail."""
from __future__ import annotations

import logging
import os
import shutil
import sysconfig
from pathlib import Path

import pytest
from standalone import (StandaloneCluster, base_environment, kill_pids, marked_pids, new_marker,
                        throwaway_python)

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cluster_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="session")
def shipped_wheel(cluster_root) -> Path:
    """The built wheel (``make wheel``: dist/hitpredict-*.whl, or $HITPREDICT_CLUSTER_WHEEL), copied under
    a ``.zip`` name: pyspark puts only ``.zip``/``.egg``/``.jar`` files of ``--py-files`` on the
    executors' ``sys.path`` (``SparkContext.PACKAGE_EXTENSIONS``), and a pure-Python wheel is a zip."""
    given = os.environ.get("HITPREDICT_CLUSTER_WHEEL")
    wheels = [Path(given)] if given else sorted((REPO / "dist").glob("hitpredict-*-py3-none-any.whl"))
    if len(wheels) != 1 or not wheels[0].is_file():
        pytest.fail(f"need exactly one built wheel, found {[str(w) for w in wheels]}: run `make wheel` "
                    f"(`make cluster-test` does)")
    wheel = wheels[0]
    sources = [p for p in (REPO / "lib" / "hitpredict").rglob("*") if p.suffix in (".py", ".yaml")]
    newer = [str(p.relative_to(REPO)) for p in sources if p.stat().st_mtime > wheel.stat().st_mtime]
    if newer and not given:
        pytest.fail(f"{wheel} is older than {len(newer)} source file(s) ({', '.join(newer[:3])}, ...): "
                    f"run `make wheel` (`make cluster-test` does)")
    ship = cluster_root / "ship"
    ship.mkdir()
    shipped = ship / (wheel.stem + ".zip")
    shutil.copyfile(wheel, shipped)
    return shipped


@pytest.fixture(scope="session")
def cluster_env(cluster_root) -> dict[str, str]:
    """The environment of every cluster process: a throwaway venv's python whose only site-packages
    entry is this venv's (without its .pth files: no editable hitpredict), and a fresh marker."""
    python = throwaway_python(cluster_root, sysconfig.get_paths()["purelib"])
    return base_environment(python, cluster_root, new_marker())


@pytest.fixture(scope="session")
def cluster(cluster_root, cluster_env):
    """A master and two one-core workers; stopped by pid on the way out, and then no process that
    carries this run's marker may be left (any left is killed and fails the run)."""
    from standalone import MARKER

    standalone = StandaloneCluster(cluster_root, cluster_env, workers=2, cores=1, memory="2g")
    try:
        standalone.start()
        yield standalone
    finally:
        standalone.stop()
        left = marked_pids(cluster_env[MARKER])
        if left:
            kill_pids(left)
        assert not left, f"processes of the cluster test still running after stop (killed now): {left}"
