"""MLflow as its users meet it: runs and the registry in a SQLite database, the registered pyfunc served by
``mlflow models serve`` on 127.0.0.1 answering an MP3 as ``hitpredict score FILE`` does, the model loaded
in a user's own Python, and an old plain-folder ``mlruns`` store migrated."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from hitpredict.config import MlflowConfig, ModelRef, load_config
from hitpredict.lake import open_lake
from hitpredict.preview_server import PreviewServer
from hitpredict.scoring.registry import resolve_model
from hitpredict.scoring.scorer import ScoreSettings
from hitpredict.scoring.single import score_file
from hitpredict.stages import build_dataset, extract_features, fetch_previews, ingest_catalogue, train_model
from hitpredict.synth.catalogue import ensure_sample_catalogue, write_catalogue_csv
from hitpredict.train import tracking
from hitpredict.train.tracking import TrackingError, configure

#: What a user's shell has: no hitpredict or Keras variables, only where the tracking database is.
USER_ENV_KEEP = ("PATH", "HOME", "LANG", "TMPDIR")


def serving_config(root: Path, embedding: bool = False):
    return load_config(None, [
        f"lake.root={root / 'lakehouse'}", f"sample.dir={root / 'sample'}", "sample.tracks=60", "sample.artists=12",
        "sample.seconds=6", "audio.clip_seconds=6", "audio.min_seconds=1",
        f"train.output_dir={root / 'models'}", f"train.petastorm_cache={root / 'petastorm'}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}", "train.epochs=1", "train.bootstrap_rounds=20",
        "train.augment.crop_frames=null", "score.segment_seconds=2", f"embedding.enabled={str(embedding).lower()}",
    ], environ={})


def register(spark, root: Path, family: str, embedding: bool = False) -> dict:
    """60 six-second tracks through features (with the musicnn embedding if ``embedding``) and a dataset; a
    one-epoch ``family`` model trained on them and registered in a SQLite-backed registry under ``root``; the
    user's MP3 and what ``score FILE`` gives for it."""
    config = serving_config(root, embedding)
    s = config.sample
    sample = ensure_sample_catalogue(s.dir, s.tracks, s.artists, seed=s.seed, seconds=s.seconds)
    lake = open_lake(config.lake, spark)
    allow = config.model_copy(update={"fetch": config.fetch.model_copy(update={"allow_hosts": ["127.0.0.1"]})})
    with PreviewServer(directory=sample.audio_dir).start() as server:
        csv_path = write_catalogue_csv(sample.rows, sample.root / "catalogue.csv", sample.audio_dir,
                                       preview_base_url=server.base_url, include_audio_uri=False)
        ingest_catalogue.run(allow, spark, lake, str(csv_path))
        fetch_previews.run(allow, spark, lake)
    extract_features.run(allow, spark, lake)
    build_dataset.run(config, spark, lake)
    trained = train_model.run(config, spark, lake, family=family, num_proc=1)
    assert trained.model_name == "hitpredict-popular" and trained.model_version is not None
    # the user's MP3: one of the catalogue's, under a name with a space
    mp3 = root / "my demo.mp3"
    shutil.copyfile(sample.audio_dir / sample.rows[0].audio_file, mp3)
    ref = ModelRef(name=trained.model_name, version=trained.model_version)
    expected = score_file(mp3, [resolve_model(ref, config.mlflow)], ScoreSettings.from_config(config),
                          config.audio.min_seconds).iloc[0]["prob_popular"]
    return {"config": config, "root": root, "trained": trained, "mp3": mp3, "expected": float(expected),
            "uri": f"models:/{trained.model_name}/{trained.model_version}"}


@pytest.fixture(scope="module")
def registered(spark, tmp_path_factory):
    """A one-epoch CNN (no embedding), registered: see :func:`register`."""
    return register(spark, tmp_path_factory.mktemp("serving"), "cnn")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _user_env(tracking_uri: str) -> dict[str, str]:
    """A shell with hitpredict's environment activated (its bin/ first on PATH, where `mlflow models serve`
    finds uvicorn) and MLFLOW_TRACKING_URI set, nothing else of this process's."""
    env = {k: os.environ[k] for k in USER_ENV_KEEP if k in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *filter(None, [env.get("PATH")])])
    return {**env, "MLFLOW_TRACKING_URI": tracking_uri}


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _wait_for_ping(base: str, server: subprocess.Popen, log: Path, limit_s: float = 240.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not answer /ping in {limit_s:.0f}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def serving(registered: dict, tmp_path: Path) -> Iterator[str]:
    """``mlflow models serve`` of the registered model on 127.0.0.1, started as a user's shell would; yields its
    base URL once it answers ``/ping``, and stops it (and its uvicorn worker) afterwards."""
    port, log = _free_port(), tmp_path / "serve.log"
    env = {**_user_env(registered["config"].mlflow.tracking_uri), "MLFLOW_HOME": str(tmp_path)}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", registered["uri"], "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_ping(base, server, log)
        yield base
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)   # the serve command and its uvicorn worker
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)


def test_served_model_answers_an_mp3_as_score_file_does(registered, tmp_path):
    mp3 = registered["mp3"]
    with serving(registered, tmp_path) as base:
        # the documented request: a JSON DataFrame whose binary `audio` column holds base64 text
        body = json.dumps({"dataframe_split": {"columns": ["audio"],
                                               "data": [[base64.b64encode(mp3.read_bytes()).decode()]]}})
        status, text = _post(f"{base}/invocations", body.encode())
        assert status == 200, text[-2000:]
        [answer] = json.loads(text)["predictions"]
        assert answer["prob_popular"] == pytest.approx(registered["expected"], abs=1e-6)
        assert 0.0 <= answer["prob_popular"] <= 1.0
        # two rows in records form: two answers, in order
        records = [{"audio": base64.b64encode(mp3.read_bytes()).decode()}] * 2
        status, text = _post(f"{base}/invocations", json.dumps({"dataframe_records": records}).encode())
        assert status == 200, text[-2000:]
        assert [p["prob_popular"] for p in json.loads(text)["predictions"]] == pytest.approx(
            [registered["expected"]] * 2, abs=1e-6)
        # a path: the server refuses to open its own files for a caller (a user's own Python may, below)
        status, text = _post(f"{base}/invocations", json.dumps({"dataframe_records": [{"path": str(mp3)}]}).encode())
        assert status == 400 and "row 0: a model server does not read paths" in text, text[-2000:]
        # garbage instead of audio: a 400 that says which row and what is wrong, no server traceback
        garbage = json.dumps({"dataframe_split": {"columns": ["audio"],
                                                  "data": [[base64.b64encode(b"not audio at all" * 64).decode()]]}})
        status, text = _post(f"{base}/invocations", garbage.encode())
        assert status == 400, text[-2000:]
        error = json.loads(text)
        assert error["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "hitpredict: row 0: cannot score: unsupported_format: not a known audio container" in error["message"], \
            error["message"]
        assert "Traceback" not in text and "stack_trace" not in error
        # an MP3 posted as the body itself: MLflow's own answer names the content types it takes
        status, text = _post(f"{base}/invocations", mp3.read_bytes(), content_type="audio/mpeg")
        assert status == 415 and "application/json" in text, text[-2000:]
        # no input column at all
        status, text = _post(f"{base}/invocations", json.dumps({"dataframe_records": [{"other": 1}]}).encode())
        assert status == 400 and "no input column: give one of audio, path, mel" in text, text[-2000:]


def test_a_served_embed_model_embeds_the_posted_mp3_as_score_file_does(spark, tmp_path):
    """An ``embed`` model reads the musicnn embedding: the server (a fresh process) builds the embedder named in
    the bundle and embeds the posted audio, giving what ``score FILE`` gives."""
    from hitpredict.train.bundle import ModelBundle

    registered = register(spark, tmp_path / "embed", "embed", embedding=True)
    bundle = ModelBundle.load(registered["trained"].bundle_dir)
    assert bundle.family == "embed" and tuple(bundle.inputs) == ("embedding", "summary")
    assert bundle.embedder_name() == "MSD_musicnn/max_pool/patches=3"
    mp3 = registered["mp3"]
    with serving(registered, tmp_path) as base:
        records = [{"audio": base64.b64encode(mp3.read_bytes()).decode()}] * 2
        status, text = _post(f"{base}/invocations", json.dumps({"dataframe_records": records}).encode())
        assert status == 200, text[-2000:]
        assert [p["prob_popular"] for p in json.loads(text)["predictions"]] == pytest.approx(
            [registered["expected"]] * 2, abs=1e-6)


def test_a_users_own_python_loads_the_registered_model_and_scores_a_path(registered, tmp_path):
    """What the README tells a user to do, in a fresh process with only MLFLOW_TRACKING_URI set."""
    script = textwrap.dedent(f"""
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model({registered["uri"]!r})
        scores = model.predict(pd.DataFrame({{"path": [{str(registered["mp3"])!r}]}}))
        with open({str(registered["mp3"])!r}, "rb") as f:
            again = model.predict(pd.DataFrame({{"audio": [f.read()]}}))
        print(json.dumps([scores["prob_popular"].tolist(), again["prob_popular"].tolist()]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=_user_env(registered["config"].mlflow.tracking_uri))
    assert done.returncode == 0, done.stderr[-3000:]
    by_path, by_bytes = json.loads(done.stdout.strip().splitlines()[-1])
    assert by_path == pytest.approx([registered["expected"]], abs=1e-6)
    assert by_bytes == pytest.approx([registered["expected"]], abs=1e-6)


def test_runs_models_and_aliases_live_in_the_sqlite_database(registered):
    import mlflow
    from mlflow.tracking import MlflowClient

    config, trained, root = registered["config"], registered["trained"], registered["root"]
    assert configure(config.mlflow) == f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient()
    run = client.get_run(trained.run_id)
    assert run.data.params["family"] == "cnn" and "test_roc_auc" in run.data.metrics
    assert run.info.artifact_uri.startswith((root / "mlartifacts").as_uri())   # artifacts beside the database
    assert not (root / "mlruns").exists()
    model_info = mlflow.models.get_model_info(registered["uri"])
    assert {c["name"] for c in model_info.signature.inputs.to_dict()} == {"audio", "path", "mel", "summary",
                                                                         "embedding", "tags"}
    client.set_registered_model_alias(trained.model_name, "champion", trained.model_version)
    resolved = resolve_model(ModelRef.parse(f"{trained.model_name}@champion"), config.mlflow)
    assert (resolved.name, resolved.version) == (trained.model_name, trained.model_version)


def test_an_old_mlruns_folder_is_migrated_and_a_file_store_is_refused(registered, tmp_path):
    """A ./mlruns plain-folder store with a run and a registered model, as hitpredict wrote it before,
    moves into the SQLite database beside it the first time that database is opened."""
    trained = registered["trained"]
    old = tmp_path / "mlruns"
    pyfunc = str(Path(tracking.__file__).with_name("pyfunc_model.py"))
    script = textwrap.dedent(f"""
        import mlflow
        mlflow.set_tracking_uri({old.as_uri()!r})
        mlflow.set_experiment("hitpredict")
        with mlflow.start_run() as run:
            mlflow.log_param("family", "cnn")
            info = mlflow.pyfunc.log_model(name="model", python_model={pyfunc!r}, pip_requirements=["hitpredict"],
                                           artifacts={{"bundle": {trained.bundle_dir!r}}})
        mlflow.register_model(info.model_uri, "old-popular")
        print(run.info.run_id)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**_user_env(old.as_uri()), "MLFLOW_ALLOW_FILE_STORE": "true"})
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.strip().splitlines()[-1]
    with pytest.raises(TrackingError, match=r"mlflow.tracking_uri file:.*maintenance mode.*migrate-filestore"):
        configure(MlflowConfig(tracking_uri=old.as_uri().replace("file://", "file:")))
    database = MlflowConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    configure(database)
    assert (tmp_path / "mlflow.db").is_file() and not (tmp_path / "mlflow.db.migrating").exists()
    from mlflow.tracking import MlflowClient

    assert MlflowClient().get_run(run_id).data.params == {"family": "cnn"}
    resolved = resolve_model(ModelRef.parse("old-popular/1"), database)
    assert resolved.bundle is not None and resolved.target == "popular"
