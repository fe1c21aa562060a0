"""Progress while a run waits: lines at the interval (fake clock), a bar on a terminal, Spark's tasks
polled while a stage runs, a real stage's log, and the training callback's lines."""
from __future__ import annotations

import io
import logging
import re
import threading
import time

import pytest

from hitpredict.progress import (BAR_ENV, INTERVAL_ENV, EpochProgress, Progress, default_interval_s, duration_text,
                                 metrics_text, progress_settings, progress_text, spark_progress)

LOGGER = "hitpredict.test_progress"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A stream that says it is an interactive terminal."""

    def isatty(self) -> bool:
        return True


def lines(caplog, logger: str = LOGGER) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_durations_and_the_line_text():
    assert [duration_text(s) for s in (0, 9.4, 59.6, 72, 3599, 3600, 7530, -3)] == \
        ["0s", "9s", "1m00s", "1m12s", "59m59s", "1h00m", "2h05m", "0s"]
    # 72 s for 37 of 64: the other 27 at the same rate take 72 * 27 / 37 = 52.5 s.
    assert progress_text("extract_features", 37, 64, "tasks", 72.0) == \
        "extract_features: 37/64 tasks (58%), 1m12s elapsed, ~53s left"
    assert progress_text("fetch", 639, 640, "tasks", 10) == "fetch: 639/640 tasks (99%), 10s elapsed, ~0s left"
    assert progress_text("fetch", 640, 640, "tasks", 10) == "fetch: 640/640 tasks (100%), 10s elapsed"
    assert progress_text("fetch", 3, None, "tasks", 5) == "fetch: 3 tasks, 5s elapsed"


def test_lines_come_at_the_interval_and_not_more_then_a_final_line(caplog):
    clock = FakeClock()
    progress = Progress("generate_sample", 100, "tracks", interval_s=5.0, bar=False, clock=clock,
                        logger=logging.getLogger(LOGGER))
    for second in range(1, 21):          # 5 tracks a second for 20 s: lines at 5, 10, 15, 20 s
        clock.now += 1
        progress.update(5)
    assert lines(caplog) == [
        "generate_sample: 25/100 tracks (25%), 5s elapsed, ~15s left",
        "generate_sample: 50/100 tracks (50%), 10s elapsed, ~10s left",
        "generate_sample: 75/100 tracks (75%), 15s elapsed, ~5s left",
        "generate_sample: 100/100 tracks (100%), 20s elapsed",
    ]
    clock.now += 0.4
    progress.close()                      # the last line says it all already: no final line
    assert len(lines(caplog)) == 4

    progress = Progress("generate_sample", 10, "tracks", interval_s=5.0, bar=False, clock=clock,
                        logger=logging.getLogger(LOGGER))
    clock.now += 7
    progress.update(6)                    # a line (7 s after the start)
    clock.now += 2
    progress.update(4)                    # none: 2 s after the last
    progress.close()                      # the final line
    progress.close()                      # a second close adds nothing
    progress.update(5)                    # nor does an update after it
    assert lines(caplog)[4:] == ["generate_sample: 6/10 tracks (60%), 7s elapsed, ~5s left",
                                 "generate_sample: 10/10 tracks (100%), 9s elapsed"]


def test_a_total_found_on_the_way_an_error_and_nothing_done(caplog):
    clock = FakeClock()
    logger = logging.getLogger(LOGGER)
    with pytest.raises(RuntimeError):
        with Progress("score_catalogue", None, "tasks", interval_s=10, bar=False, clock=clock, logger=logger) as p:
            clock.now += 3
            p.set(2, 8)
            clock.now += 9                # 12 s after the start, 12 s after the last line
            p.set(6, 16)
            raise RuntimeError("boom")
    assert lines(caplog) == ["score_catalogue: 6/16 tasks (38%), 12s elapsed, ~20s left",
                             "score_catalogue: 6/16 tasks (38%), 12s elapsed, ~20s left, stopped by an error"]
    caplog.clear()
    with Progress("fetch_previews", None, "tasks", interval_s=1, bar=False, clock=clock, logger=logger):
        clock.now += 30
    assert lines(caplog) == []             # nothing counted: no line at all

    # Spark plans a stage's jobs one after another: all known tasks done is not 100% until the end.
    with Progress("extract_features", None, "tasks", interval_s=1, bar=False, clock=clock, logger=logger,
                  open_total=True) as p:
        clock.now += 1
        p.set(2, 2)
        clock.now += 1
        p.set(3, 6)
        clock.now += 1
        p.set(6, 6)
    assert lines(caplog) == ["extract_features: 2/2 tasks so far, 1s elapsed",
                             "extract_features: 3/6 tasks (50%), 2s elapsed, ~2s left",
                             "extract_features: 6/6 tasks so far, 3s elapsed",
                             "extract_features: 6/6 tasks (100%), 3s elapsed"]


def test_a_terminal_gets_a_tqdm_bar_and_no_lines(caplog, monkeypatch):
    terminal = Terminal()
    clock = FakeClock()
    with Progress("extract_features", 64, "tasks", interval_s=0.0, bar=True, stream=terminal, clock=clock,
                  logger=logging.getLogger(LOGGER)) as progress:
        assert progress.draws_bar
        for _ in range(37):
            clock.now += 1
            progress.update()
    drawn = terminal.getvalue()
    assert "extract_features" in drawn and "37/64" in drawn and "\r" in drawn, drawn
    assert re.search(r"58%\|[^|\n]+\| 37/64 ", drawn), drawn     # tqdm's bar between the bars
    assert lines(caplog) == []

    # Not a terminal, HITPREDICT_PROGRESS_BAR=0, or bar=False: lines, no bar.
    assert not Progress("x", 1, bar=True, stream=io.StringIO()).draws_bar
    assert not Progress("x", 1, bar=False, stream=Terminal()).draws_bar
    monkeypatch.setenv(BAR_ENV, "0")
    assert not Progress("x", 1, stream=Terminal()).draws_bar
    monkeypatch.setenv(BAR_ENV, "1")
    assert Progress("x", 1, stream=Terminal()).draws_bar


def test_settings_travel_by_environment_and_are_restored(monkeypatch):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    monkeypatch.delenv(BAR_ENV, raising=False)
    assert default_interval_s() == 10.0
    with progress_settings(2.5, False):
        assert default_interval_s() == 2.5 and Progress("x", 1).interval_s == 2.5
        assert not Progress("x", 1, stream=Terminal()).draws_bar
    assert default_interval_s() == 10.0 and Progress("x", 1, stream=Terminal()).draws_bar
    assert default_interval_s({INTERVAL_ENV: "soon"}) == 10.0 and default_interval_s({INTERVAL_ENV: "-1"}) == 10.0


def _slow_job(spark, tasks: int = 8, seconds: float = 0.4) -> int:
    def slow(x: int) -> int:
        import time as t

        t.sleep(seconds)
        return x

    return spark.sparkContext.parallelize(range(tasks), tasks).map(slow).count()


def test_the_spark_poller_names_the_stage_and_counts_its_tasks(spark, caplog):
    sc = spark.sparkContext
    _slow_job(spark, 2, 0.0)                # Python workers started: the timed job below is the job itself
    assert sc.getLocalProperty("spark.jobGroup.id") is None
    started = time.monotonic()
    with spark_progress(spark, "probe", 0.3, poll_s=0.05, logger=logging.getLogger(LOGGER)) as progress:
        assert progress is not None and not progress.draws_bar
        assert sc.getLocalProperty("spark.jobGroup.id").startswith("hitpredict-probe-")
        assert _slow_job(spark, 8, 0.4) == 8     # 8 tasks of 0.4 s on 2 cores: ~1.6 s
    took = time.monotonic() - started
    seen = lines(caplog)
    assert seen[-1].startswith("probe: 8/8 tasks (100%), "), seen
    counts = [tuple(map(int, re.match(r"probe: (\d+)/(\d+) tasks", line).groups())) for line in seen]
    assert all(total == 8 for _, total in counts), seen
    assert any(0 < done < 8 for done, _ in counts), seen        # lines while it ran, not only the last
    assert len(seen) <= took / 0.3 + 2, seen                      # at most one per interval, plus the final one
    assert sc.getLocalProperty("spark.jobGroup.id") is None       # the group is cleared after the block
    assert not [t for t in threading.enumerate() if t.name.startswith("hitpredict-progress-")]


def test_the_spark_poller_stops_on_error_and_keeps_a_group_it_finds(spark, caplog):
    sc = spark.sparkContext
    sc.setLocalProperty("spark.jobGroup.id", "notebook-cell")
    try:
        _slow_job(spark, 3, 0.0)             # before the block: not this stage's work
        with pytest.raises(ValueError):
            with spark_progress(spark, "failing", 60, poll_s=0.05, logger=logging.getLogger(LOGGER)):
                assert sc.getLocalProperty("spark.jobGroup.id") == "notebook-cell"
                _slow_job(spark, 4, 0.0)
                raise ValueError("the stage failed")
        assert sc.getLocalProperty("spark.jobGroup.id") == "notebook-cell"
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert lines(caplog) == [lines(caplog)[0]] and re.match(
        r"^failing: 4/4 tasks \(100%\), [0-9hms]+ elapsed, stopped by an error$", lines(caplog)[0]), lines(caplog)
    assert not [t for t in threading.enumerate() if t.name.startswith("hitpredict-progress-")]


@pytest.mark.slow
def test_a_real_fetch_and_features_run_logs_its_progress(spark, tmp_path, mp3, caplog):
    from hitpredict.config import load_config
    from hitpredict.lake import DeltaRsLake
    from hitpredict.stages import extract_features, fetch_previews, ingest_catalogue

    folder = tmp_path / "demos"
    folder.mkdir()
    for i in range(4):
        (folder / f"demo{i}.mp3").write_bytes(mp3)
    config = load_config(None, [f"lake.root={tmp_path / 'lakehouse'}", "audio.clip_seconds=3",
                                "audio.min_seconds=1", "features.decode_in_child=false",
                                "progress.interval_s=0.2"], environ={})
    lake = DeltaRsLake(config.lake, spark)
    ingest_catalogue.run(config, spark, lake, str(folder))
    caplog.clear()
    assert fetch_previews.run(config, spark, lake).ok == 4
    assert extract_features.run(config, spark, lake).ok == 4
    seen = lines(caplog, "hitpredict.progress")
    for stage in ("fetch_previews", "extract_features"):
        mine = [line for line in seen if line.startswith(f"{stage}: ")]
        assert mine and re.match(rf"^{stage}: (\d+)/\1 tasks \(100%\), [0-9hms]+ elapsed$", mine[-1]), seen


def test_epoch_lines_and_batch_lines_in_long_epochs(caplog):
    clock = FakeClock()
    progress = EpochProgress("train_model cnn", epochs=2, steps=10, interval_s=5.0, clock=clock,
                             logger=logging.getLogger(LOGGER))
    progress.train_begin()
    for epoch in range(2):
        progress.epoch_begin(epoch)
        for batch in range(10):
            clock.now += 2                # 2 s a batch: a batch line every 5 s at most
            progress.batch_end(batch, {"loss": 0.5 - 0.01 * batch, "auc": 0.7})
        clock.now += 1                    # validation
        progress.epoch_end(epoch, {"loss": 0.41, "auc": 0.71, "val_loss": 0.6, "val_auc": 0.66})
    assert lines(caplog) == [
        "train_model cnn: epoch 1/2: 3/10 batches (30%), 6s elapsed, ~14s left; loss 0.4800, auc 0.7000",
        "train_model cnn: epoch 1/2: 6/10 batches (60%), 12s elapsed, ~8s left; loss 0.4500, auc 0.7000",
        "train_model cnn: epoch 1/2: 9/10 batches (90%), 18s elapsed, ~2s left; loss 0.4200, auc 0.7000",
        "train_model cnn: epoch 1/2 done in 21s: loss 0.4100, auc 0.7100, val_loss 0.6000, val_auc 0.6600; "
        "21s elapsed, ~21s left",
        "train_model cnn: epoch 2/2: 3/10 batches (30%), 6s elapsed, ~14s left; loss 0.4800, auc 0.7000",
        "train_model cnn: epoch 2/2: 6/10 batches (60%), 12s elapsed, ~8s left; loss 0.4500, auc 0.7000",
        "train_model cnn: epoch 2/2: 9/10 batches (90%), 18s elapsed, ~2s left; loss 0.4200, auc 0.7000",
        "train_model cnn: epoch 2/2 done in 21s: loss 0.4100, auc 0.7100, val_loss 0.6000, val_auc 0.6600; "
        "42s elapsed",
    ]
    assert metrics_text({"val_auc": 0.5, "auc": 0.6, "val_loss": 1, "loss": 2, "lr": 0.1, "note": "x"}) == \
        "loss 2.0000, auc 0.6000, val_loss 1.0000, val_auc 0.5000"


@pytest.mark.slow
def test_the_keras_callback_logs_every_epoch_of_a_real_fit(caplog):
    """The callback train/worker.py gives rank 0, in a real (tiny) Keras 2 fit: tensors as batch logs."""
    from hitpredict.keras_compat import ensure_keras2, keras
    from hitpredict.train.worker import progress_callback

    ensure_keras2()
    import numpy as np

    k = keras()
    model = k.Sequential([k.layers.Input((3,)), k.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=[k.metrics.AUC(name="auc")])
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    progress = EpochProgress("train_model mlp", epochs=3, steps=4, interval_s=0.0, logger=logging.getLogger(LOGGER))
    model.fit(x, y, batch_size=8, epochs=3, validation_data=(x, y), callbacks=[progress_callback(progress)],
              verbose=0)
    seen = lines(caplog)
    epochs = [line for line in seen if " done in " in line]
    assert len(epochs) == 3, seen
    assert all(re.match(r"^train_model mlp: epoch \d/3 done in [0-9hms]+: loss \d\.\d{4}, auc \d\.\d{4}, "
                        r"val_loss \d\.\d{4}, val_auc \d\.\d{4}; [0-9hms]+ elapsed", line) for line in epochs), epochs
    batches = [line for line in seen if "batches" in line]
    assert len(batches) == 12 and batches[3].startswith("train_model mlp: epoch 1/3: 4/4 batches (100%)"), batches
    assert all("; loss " in line for line in batches), batches
