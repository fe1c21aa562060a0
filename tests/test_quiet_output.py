"""What a run prints: its own progress and summary, never a secret, and third-party noise only
with ``-v``. The demo path (ingest -> fetch -> features -> Horovod training -> scoring -> report)
runs as a user runs it, and its whole output is searched: the driver's, the Spark JVM's, the
Spark workers' and the Horovod processes'."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET_PARTS = ("SECRET", "TOKEN", "KEY", "PASSWORD")

# Records, in every Python process of the run (driver, Spark workers, Horovod processes), the
# secret-named variables it sees: Spark and Horovod make up their own (PYTHON_WORKER_FACTORY_SECRET,
# _HOROVOD_SECRET_KEY), and those must not be printed either.
SITECUSTOMIZE = """\
import json, os
_path = os.environ.get("HITPREDICT_TEST_ENV_DUMP")
if _path:
    _seen = {k: v for k, v in os.environ.items() if any(p in k.upper() for p in %r)}
    with open(_path, "a") as _f:
        _f.write(json.dumps(_seen) + "\\n")
""" % (SECRET_PARTS,)

# Lines a default run may print that contain WARN: hitpredict's own warnings, and the JVM's own
# notice that Spark 4 loads an incubator module (printed by java itself, before any logging exists).
ALLOWED_WARNINGS = re.compile(r"^(\d\d:\d\d:\d\d WARNING hitpredict[.:]|WARNING: Using incubator modules)")
NOISE = ("WARNING:tensorflow", "AutoGraph", "FutureWarning", "DeprecationWarning", "UserWarning", "log4j",
         " WARN ", "environ(", "Setting default log level", "retracing", "Failed to infer model signature",
         "Successfully registered model", "oneDNN")


def demo_command(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hitpredict.cli", "demo", *extra,
            "--set", f"lake.root={root / 'lakehouse'}", "--set", f"sample.dir={root / 'sample'}",
            "--set", "sample.tracks=60", "--set", "sample.artists=12", "--set", "sample.seconds=6",
            "--set", "sample.preview_port=0", "--set", "audio.clip_seconds=6", "--set", "audio.min_seconds=1",
            "--set", f"train.output_dir={root / 'models'}", "--set", f"train.petastorm_cache={root / 'petastorm'}",
            "--set", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", "--set", "train.epochs=1",
            "--set", "train.num_proc=2", "--set", "train.bootstrap_rounds=20",
            "--set", "train.augment.crop_frames=null",
            "--set", f"score.report_dir={root / 'report'}", "--set", "demo.models={popular: cnn}"]


@pytest.mark.slow
def test_demo_prints_its_own_progress_and_no_secret_or_third_party_noise(tmp_path):
    """The demo once printed each Horovod process's whole os.environ (AutoGraph's warning about
    ``os.environ.setdefault``, reached from the tf.data map), _HOROVOD_SECRET_KEY and
    PYTHON_WORKER_FACTORY_SECRET included, amid AutoGraph, Petastorm, MLflow and log4j noise."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    dump = tmp_path / "seen.jsonl"
    mine = {f"HITPREDICT_TEST_{part}": f"{part.lower()}-{uuid.uuid4().hex}" for part in SECRET_PARTS}
    mine.update({"SPOTIPY_CLIENT_SECRET": f"spotify-{uuid.uuid4().hex}",   # read into the run's config
                 "AWS_SECRET_ACCESS_KEY": f"aws-{uuid.uuid4().hex}", "MY_DB_PASSWORD": f"pw-{uuid.uuid4().hex}"})
    env = {**os.environ, **mine, "TF_USE_LEGACY_KERAS": "1", "HITPREDICT_TEST_ENV_DUMP": str(dump),
           "PYTHONPATH": os.pathsep.join([str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    for key in ("PYTHONWARNINGS", "TF_CPP_MIN_LOG_LEVEL", "HITPREDICT_VERBOSITY"):   # the run decides
        env.pop(key, None)
    done = subprocess.run(demo_command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=1500, cwd=tmp_path, env=env)
    output = done.stdout
    (tmp_path / "output.txt").write_text(output)
    assert done.returncode == 0, output[-5000:]
    assert "demo finished in" in output and "top 10 tracks:" in output and "train_model" in output
    assert "cnn (binary) on ds-" in output and re.search(r"^report: .*report\.html$", output, re.M)

    seen: dict[str, set[str]] = {}
    for line in dump.read_text().splitlines():
        for name, value in json.loads(line).items():
            seen.setdefault(name, set()).add(value)
    assert {"PYTHON_WORKER_FACTORY_SECRET", "_HOROVOD_SECRET_KEY", *mine} <= set(seen), sorted(seen)
    secrets = {(name, value) for name, values in seen.items() for value in values if len(value) >= 6}
    leaked = sorted(name for name, value in secrets if value in output)
    assert not leaked, f"printed the value of {leaked}"
    assert "environ(" not in output and "_HOROVOD_SECRET_KEY" not in output

    noisy = [line for line in output.splitlines() if any(word in line for word in NOISE)
             or (re.search(r"WARN", line) and not ALLOWED_WARNINGS.match(line))]
    assert not noisy, "\n".join(noisy[:20])


def test_third_party_warnings_are_hidden_by_default_and_shown_with_v(tmp_path):
    """Python warnings, third-party loggers and the processes a run starts follow the run's verbosity."""
    script = textwrap.dedent("""
        import logging, subprocess, sys, warnings
        from hitpredict.logs import configure
        configure(int(sys.argv[1]))
        warnings.warn_explicit("pyarrow.localfs is deprecated", FutureWarning, "petastorm/fs_utils.py", 88,
                               module="petastorm.fs_utils")
        logging.getLogger("petastorm.spark.spark_dataset_converter").warning("Converting floating-point columns")
        logging.getLogger("tensorflow").warning("AutoGraph could not transform <function f>")
        logging.getLogger("mlflow.pyfunc").warning("Failed to infer model signature")
        logging.getLogger("hitpredict.stages").info("our own progress")
        logging.getLogger("hitpredict.stages").debug("our own detail")
        subprocess.run([sys.executable, "-c",
                        "import warnings; warnings.warn('child says FutureWarning', FutureWarning)"])
        print("summary line")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "HITPREDICT_VERBOSITY")}
    runs = {}
    for level in (0, 1):
        done = subprocess.run([sys.executable, "-c", script, str(level)], capture_output=True, text=True, timeout=120,
                              env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        runs[level] = done.stdout + done.stderr
    quiet, verbose = runs[0], runs[1]
    assert "our own progress" in quiet and "summary line" in quiet and "our own detail" not in quiet
    for text in ("pyarrow.localfs is deprecated", "Converting floating-point", "AutoGraph could not transform",
                 "Failed to infer model signature", "child says FutureWarning"):
        assert text not in quiet, quiet
        assert text in verbose, verbose
    assert "our own detail" in verbose


def test_log_lines_show_no_secret_value(monkeypatch):
    """Whatever a library logs (a repr of the environment, a traceback), secret values become ***."""
    from hitpredict.logs import RedactingFormatter

    secret = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("SOME_SERVICE_TOKEN", secret)
    monkeypatch.setenv("PUBLIC_SETTING", "public-value-123")
    formatter = RedactingFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError(f"bad token {secret}")
    except ValueError:
        record = logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, "could not transform %s",
                                   (dict(os.environ),), sys.exc_info())
    line = formatter.format(record)
    assert secret not in line and "'SOME_SERVICE_TOKEN': '***'" in line and "bad token ***" in line
    assert "public-value-123" in line
