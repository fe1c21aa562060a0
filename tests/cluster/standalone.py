"""A Spark standalone cluster on 127.0.0.1 for the cluster test, and spark-submit against it.

Everything starts from the pip-installed pyspark (``SPARK_HOME`` = its package folder, which has
``bin/spark-class`` and ``bin/spark-submit`` but no ``sbin/start-master.sh``):

    $SPARK_HOME/bin/spark-class org.apache.spark.deploy.master.Master --host 127.0.0.1 --port 0 --webui-port 0
    $SPARK_HOME/bin/spark-class org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --port 0 \
        --webui-port 0 --cores 1 --memory 2g --work-dir DIR spark://127.0.0.1:PORT

Port 0 lets each daemon pick a free port (other sessions run Spark on this machine too); the
master's port is read from its log. Every process gets a marker variable in its environment, so
the processes it starts (executors, Python workers, Horovod processes) can be found and stopped
by pid, and the test can assert that none is left.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

log = logging.getLogger(__name__)

SPARK_HOME = Path(pyspark.__file__).resolve().parent
MARKER = "HITPREDICT_CLUSTER_TEST"


def throwaway_python(root: Path, site_packages: str) -> Path:
    """A venv (no pip) whose site-packages holds one ``.pth`` line pointing at ``site_packages``.

    A folder added by a ``.pth`` line is put on ``sys.path`` without reading *its* ``.pth`` files,
    so the repository's editable install (``__editable__.hitpredict-0.1.0.pth``) is invisible:
    hitpredict can only come from the wheel that spark-submit ships. Returns the venv's python.
    """
    venv = root / "venv"
    subprocess.run([f"python{sys.version_info.major}.{sys.version_info.minor}", "-m", "venv", "--without-pip",
                    str(venv)], check=True, timeout=120)
    lib = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (lib / "hitpredict-cluster-deps.pth").write_text(site_packages + "\n")
    return venv / "bin" / "python"


def base_environment(python: Path, root: Path, marker: str) -> dict[str, str]:
    """The environment of every process of the cluster: the throwaway python for drivers and executors,
    Keras 2, loopback addresses, logs and scratch under ``root``, no PYTHONPATH from this process."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PYSPARK", "SPARK", "VIRTUAL_ENV", "PYTEST", "HITPREDICT"))}
    (root / "spark-local").mkdir(parents=True, exist_ok=True)
    env.update({
        "SPARK_HOME": str(SPARK_HOME),
        "PYSPARK_PYTHON": str(python),
        "PYSPARK_DRIVER_PYTHON": str(python),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_DIRS": str(root / "spark-local"),
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
        MARKER: marker,
    })
    return env


def marked_pids(marker: str) -> list[int]:
    """Pids of the live processes whose environment carries ``MARKER=marker`` (this user's only)."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    with open(f"/proc/{entry}/stat", "rb") as st:
                        if st.read().split(b") ")[-1][:1] != b"Z":   # a zombie has exited already
                            found.append(int(entry))
        except OSError:   # gone meanwhile, or not ours to read
            continue
    return found


def stop_process_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group that ``proc`` leads, then SIGKILL it if it has not exited in ``grace_s``."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:   # children left in the group (executors, Python daemons) go too
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("pid %d did not exit after SIGKILL", proc.pid)


def kill_pids(pids: list[int]) -> None:
    """SIGKILL each pid (processes found by :func:`marked_pids`)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for(pattern: str, path: Path, proc: subprocess.Popen, timeout_s: float, count: int = 1) -> list[re.Match]:
    """Wait until ``path`` (a daemon's log) has ``count`` lines matching ``pattern``; the matches."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        found = list(re.finditer(pattern, text))
        if len(found) >= count:
            return found
        if proc.poll() is not None:
            raise RuntimeError(f"{path.name}: the daemon exited ({proc.returncode}) before /{pattern}/:\n"
                               f"{text[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name}: no /{pattern}/ x{count} within {timeout_s:.0f}s:\n{text[-3000:]}")
        time.sleep(0.5)


@dataclass
class StandaloneCluster:
    """A master and ``workers`` workers of ``cores`` cores each on 127.0.0.1, every process under ``root``."""

    root: Path
    env: dict[str, str]
    workers: int = 2
    cores: int = 1
    memory: str = "2g"
    start_timeout_s: float = 240.0
    url: str = ""
    daemons: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    _logs: list = field(default_factory=list)

    def _spawn(self, name: str, *args: str) -> tuple[subprocess.Popen, Path]:
        log_path = self.root / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "wb")
        self._logs.append(out)
        command = [str(SPARK_HOME / "bin" / "spark-class"), *args]
        # spark-class execs java: the pid is the daemon's, and its own process group holds its children.
        proc = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.root)
        self.daemons.append((name, proc))
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(command))
        return proc, log_path

    def start(self) -> "StandaloneCluster":
        """Start the master, then the workers; returns once every worker has registered."""
        master, master_log = self._spawn("master", "org.apache.spark.deploy.master.Master",
                                         "--host", "127.0.0.1", "--port", "0", "--webui-port", "0")
        found = _wait_for(r"Starting Spark master at (spark://127\.0\.0\.1:\d+)", master_log, master,
                          self.start_timeout_s)
        self.url = found[0][1]
        for i in range(self.workers):
            work_dir = self.root / f"worker-{i}"
            work_dir.mkdir(parents=True, exist_ok=True)
            self._spawn(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", "0",
                        "--webui-port", "0", "--cores", str(self.cores), "--memory", self.memory,
                        "--work-dir", str(work_dir), self.url)
        _wait_for(r"Registering worker 127\.0\.0\.1:\d+ with", master_log, master, self.start_timeout_s,
                  count=self.workers)
        return self

    def stop(self) -> None:
        """Stop every daemon by its pid (workers first; their executors with them), then the master."""
        for name, proc in reversed(self.daemons):
            stop_process_group(proc)
            log.info("stopped %s (pid %d): exit %s", name, proc.pid, proc.returncode)
        for out in self._logs:
            out.close()

    def worker_dirs(self) -> list[Path]:
        return [self.root / f"worker-{i}" for i in range(self.workers)]


@dataclass
class Submitted:
    """One spark-submit: its command, exit status, wall time and output."""

    name: str
    command: list[str]
    returncode: int
    seconds: float
    output: str


def spark_submit(name: str, master: str, main: str, args: list[str], env: dict[str, str], cwd: Path,
                 py_files: list[str] = (), conf: dict[str, str] | None = None, timeout_s: float = 900.0,
                 log_dir: Path | None = None) -> Submitted:
    """``spark-submit --master MASTER --py-files ... MAIN ARGS`` in its own process group (killed, with
    everything it started, on the way out), output kept in ``log_dir/<name>.log``."""
    command = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", master, "--deploy-mode", "client"]
    if py_files:
        command += ["--py-files", ",".join(py_files)]
    for key, value in (conf or {}).items():
        command += ["--conf", f"{key}={value}"]
    command += [main, *args]
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_process_group(proc, grace_s=5)
        output, _ = proc.communicate()
        output += f"\n[cluster test] {name}: killed after {timeout_s:.0f}s".encode()
    finally:
        stop_process_group(proc, grace_s=5)   # nothing of this driver outlives it
    text = output.decode(errors="replace")
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / f"{name}.log").write_text(" ".join(command) + "\n\n" + text)
    return Submitted(name, command, proc.returncode, time.monotonic() - started, text)


def new_marker() -> str:
    return uuid.uuid4().hex
