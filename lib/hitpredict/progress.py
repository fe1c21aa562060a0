"""Progress while a run waits: a bar on an interactive terminal, a line every few seconds elsewhere.

- :class:`Progress` counts work done against a total. On a terminal (its stream is a TTY) it draws a
  tqdm bar; anywhere else (a log file, CI, a Databricks job's output) it logs a line at most every
  ``interval_s`` seconds, and a final line when it closes::

      extract_features: 37/64 tasks (58%), 1m12s elapsed, ~52s left

- :func:`spark_progress` wraps the Spark actions of one stage: a driver-side thread polls Spark's
  status tracker for the tasks of the jobs the block starts (done/total) and feeds a :class:`Progress`;
  the thread stops when the block exits, also on an error. Spark plans a stage's jobs one after
  another, so the total grows as it goes (``6/10 tasks``; ``2/2 tasks so far`` between two jobs).
- :class:`EpochProgress` is the clock-and-text half of the training callback (``train/worker.py``
  wraps it in a Keras callback on rank 0): one line per epoch with its loss and metrics, and batch
  lines every ``interval_s`` seconds inside long epochs.

The interval and whether a terminal gets a bar come from the ``progress`` config section; processes a
run starts (Horovod's training processes) read them from the environment (:func:`progress_environment`).
Every clock is injectable, so the tests need no sleeping.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TextIO

from hitpredict.config import ProgressConfig

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: Environment variables that carry the ``progress`` settings to the processes a run starts.
INTERVAL_ENV = "HITPREDICT_PROGRESS_INTERVAL_S"
BAR_ENV = "HITPREDICT_PROGRESS_BAR"
#: Seconds between two progress lines when nothing says otherwise: the config's default.
DEFAULT_INTERVAL_S: float = ProgressConfig().interval_s
#: The Spark local property that names the job group of the jobs a thread starts.
JOB_GROUP = "spark.jobGroup.id"

Clock = Callable[[], float]


# --------------------------------------------------------------------------- settings and text

def default_interval_s(environ: Mapping[str, str] | None = None) -> float:
    """Seconds between progress lines: ``$HITPREDICT_PROGRESS_INTERVAL_S``, else :data:`DEFAULT_INTERVAL_S`."""
    text = (os.environ if environ is None else environ).get(INTERVAL_ENV, "")
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value >= 0 else DEFAULT_INTERVAL_S


def bar_allowed(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a terminal may get a bar: ``$HITPREDICT_PROGRESS_BAR`` is not ``0`` (default: yes)."""
    return (os.environ if environ is None else environ).get(BAR_ENV, "1").strip().lower() not in ("0", "false", "no")


def progress_environment(interval_s: float, bar: bool) -> dict[str, str]:
    """The variables that give the processes a run starts these ``progress`` settings."""
    return {INTERVAL_ENV: repr(float(interval_s)), BAR_ENV: "1" if bar else "0"}


@contextmanager
def progress_settings(interval_s: float, bar: bool) -> Iterator[None]:
    """Within the block, this process and those it starts (Horovod's) use these settings; restored after."""
    wanted = progress_environment(interval_s, bar)
    before = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def duration_text(seconds: float) -> str:
    """``42s``, ``1m12s`` or ``2h05m``: a duration in whole seconds (negative counts as 0)."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_text(name: str, done: int, total: int | None, unit: str, elapsed_s: float) -> str:
    """``name: 37/64 tasks (58%), 1m12s elapsed, ~52s left``; without a total, ``name: 37 tasks, ...``.

    The estimate assumes the rest goes at the rate so far; the percentage shows 100 only when done.
    """
    if total:
        percent = min(round(100 * done / total), 99 if done < total else 100)
        text = f"{name}: {done}/{total} {unit} ({percent}%), {duration_text(elapsed_s)} elapsed"
        if 0 < done < total:
            text += f", ~{duration_text(elapsed_s * (total - done) / done)} left"
        return text
    return f"{name}: {done} {unit}, {duration_text(elapsed_s)} elapsed"


def _columns(stream: Any) -> int | None:
    """The width of the terminal ``stream`` writes to, None when it cannot be asked."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):   # io.UnsupportedOperation is an OSError
        return None


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


# --------------------------------------------------------------------------- the reporter

class Progress:
    """Work done against a total: a tqdm bar on a terminal, else a log line every ``interval_s`` seconds.

    Parameters
    ----------
    name : what is being done, first word of every line (e.g. the stage's name).
    total : how many ``unit`` there are to do (None: not known yet; :meth:`set` can give it later).
    unit : what is counted ("tracks", "tasks").
    interval_s : seconds between two lines (None: :func:`default_interval_s`); the final line comes anyway.
    bar : None: a bar when ``stream`` is a terminal and :func:`bar_allowed`; True: a bar when ``stream``
        is a terminal; False: lines only.
    stream : where the bar is drawn (default: stderr, where the log goes).
    clock : seconds, monotonic (tests pass a fake one).
    logger : where the lines go (default: ``hitpredict.progress``), at INFO.
    open_total : the total counts only the work known so far (Spark plans a stage's jobs one after
        another): until the reporter closes, a line with everything known done says ``2/2 tasks so far``
        rather than ``(100%)``.

    Use as a context manager, or call :meth:`close`; a reporter closed by an exception says so in its
    final line. Thread-safe: a poller thread may :meth:`set` while another thread closes it.
    """

    def __init__(self, name: str, total: int | None = None, unit: str = "items", *, interval_s: float | None = None,
                 bar: bool | None = None, stream: TextIO | None = None, clock: Clock = time.monotonic,
                 logger: logging.Logger | None = None, open_total: bool = False) -> None:
        self.name = name
        self.open_total = open_total
        self.total = total
        self.unit = unit
        self.done = 0
        self.interval_s = default_interval_s() if interval_s is None else interval_s
        self.logger = logger or log
        self.clock = clock
        self.started = clock()
        self._last_line = self.started
        self._last_logged: tuple[int, int | None] | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._exit = ExitStack()
        stream = sys.stderr if stream is None else stream
        self._bar: Any = None
        if (bar_allowed() if bar is None else bar) and is_terminal(stream):
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # A terminal that reports no size (a pty nobody sized) would get no bar at all: 100 x 30 there.
            sized = _columns(stream) != 0
            self._bar = tqdm(total=total, desc=name, unit=f" {unit}", unit_scale=False, file=stream,
                             dynamic_ncols=sized, ncols=None if sized else 100, nrows=None if sized else 30,
                             mininterval=0.5, leave=True)
            # Log lines written while the bar is drawn go above it instead of through it.
            self._exit.enter_context(logging_redirect_tqdm())

    @property
    def draws_bar(self) -> bool:
        """Whether this reporter draws a bar (on a terminal) rather than logging lines."""
        return self._bar is not None

    def elapsed_s(self) -> float:
        """Seconds since the reporter started."""
        return self.clock() - self.started

    def text(self) -> str:
        """The progress line as it would be logged now."""
        if self.open_total and not self._closed and self.total and self.done >= self.total:
            return f"{self.name}: {self.done}/{self.total} {self.unit} so far, {duration_text(self.elapsed_s())} elapsed"
        return progress_text(self.name, self.done, self.total, self.unit, self.elapsed_s())

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        with self._lock:
            if not self._closed:
                self.done += n
                self._show()

    def set(self, done: int, total: int | None = None) -> None:
        """``done`` units done in all (and, when given, ``total`` to do: it may grow as work is found)."""
        with self._lock:
            if self._closed:
                return
            if total is not None and total != self.total:
                self.total = total
                if self._bar is not None:
                    self._bar.total = total
            self.done = done
            self._show()

    def _show(self) -> None:
        if self._bar is not None:
            if self.done != self._bar.n:
                self._bar.update(self.done - self._bar.n)
            return
        now = self.clock()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            self._last_logged = (self.done, self.total)
            self.logger.info("%s", self.text())

    def close(self, failed: bool = False) -> None:
        """Finish: the bar stays on screen as it ended, or the final line is logged (when anything was
        counted and the last line does not already say it; ``failed`` adds that an error stopped it). A
        second call does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.refresh()
                self._bar.close()
                self._exit.close()
                return
            said = self._last_logged == (self.done, self.total) and not self.open_total and not failed
            if (self.done or self.total) and not said:
                self.logger.info("%s%s", self.text(), ", stopped by an error" if failed else "")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self.close(failed=kind is not None)


# --------------------------------------------------------------------------- Spark's status tracker

class SparkTasks:
    """Tasks done and in all of the jobs of one job group, as Spark's status tracker reports them.

    A stage shared by two jobs counts once. A finished job's stages that ran no task (skipped: their
    shuffle output was reused) do not count. Finished jobs are read once and remembered; the tracker
    keeps the last ``spark.ui.retainedJobs`` jobs only, and a job it has forgotten keeps its last count.
    """

    def __init__(self, sc: "SparkContext", group: str, ignore: set[int] | None = None) -> None:
        self.sc = sc
        self.group = group
        self.ignore = set(ignore or ())
        self._finished: dict[int, dict[int, tuple[int, int]]] = {}   # job -> stage -> (done, total)
        self._last: dict[int, dict[int, tuple[int, int]]] = {}

    def count(self) -> tuple[int, int]:
        """(tasks done, tasks in all) of the group's jobs so far."""
        tracker = self.sc.statusTracker()
        for job_id in tracker.getJobIdsForGroup(self.group):
            if job_id in self.ignore or job_id in self._finished:
                continue
            job = tracker.getJobInfo(job_id)
            if job is None:
                continue
            finished = job.status in ("SUCCEEDED", "FAILED")
            stages: dict[int, tuple[int, int]] = {}
            for stage_id in job.stageIds:
                stage = tracker.getStageInfo(stage_id)
                if stage is None:
                    continue
                if finished and stage.numCompletedTasks == 0 and stage.numActiveTasks == 0:
                    continue   # skipped
                stages[int(stage_id)] = (min(stage.numCompletedTasks, stage.numTasks), stage.numTasks)
            self._last[job_id] = stages
            if finished:
                self._finished[job_id] = stages
        seen: dict[int, tuple[int, int]] = {}
        for stages in self._last.values():
            seen.update(stages)
        return sum(d for d, _ in seen.values()), sum(t for _, t in seen.values())


def spark_console_progress(sc: "SparkContext") -> bool:
    """Whether Spark draws its own console progress bar (``spark.ui.showConsoleProgress``)."""
    return str(sc.getConf().get("spark.ui.showConsoleProgress", "false")).lower() == "true"


@contextmanager
def spark_progress(spark: "SparkSession", name: str, interval_s: float | None = None, *, bar: bool | None = None,
                   poll_s: float | None = None, stream: TextIO | None = None, clock: Clock = time.monotonic,
                   logger: logging.Logger | None = None) -> Iterator[Progress | None]:
    """Report the tasks of the Spark jobs this block starts (in this thread) as ``name``'s progress.

    The jobs are found by their job group: the thread's own when it has one (a notebook's, a
    Databricks job's), else one set for the block and cleared after. A thread polls the status tracker
    every ``poll_s`` seconds (default: the interval, at most 1 s) and feeds a :class:`Progress` (see it
    for ``interval_s``, ``bar``, ``stream``, ``clock`` and ``logger``), which the block receives; the
    thread stops, and the final line is written, when the block exits, also on an error.

    Yields None, and reports nothing, where there is no SparkContext to ask (Spark Connect), and on a
    terminal when Spark draws its own console progress bar (``spark.ui.showConsoleProgress``, which
    hitpredict's sessions turn off): two bars at once would garble each other.
    """
    try:
        sc = spark.sparkContext
        sc.statusTracker()
    except Exception as exc:  # noqa: BLE001 - Spark Connect sessions have no SparkContext
        log.debug("%s: no Spark status tracker here (%s); no progress lines", name, exc)
        yield None
        return
    stream = sys.stderr if stream is None else stream
    if is_terminal(stream) and spark_console_progress(sc):
        yield None
        return
    previous = sc.getLocalProperty(JOB_GROUP)
    group = previous or f"hitpredict-{name}-{uuid.uuid4().hex[:12]}"
    ignore = set(sc.statusTracker().getJobIdsForGroup(group)) if previous else set()
    if previous is None:
        sc.setLocalProperty(JOB_GROUP, group)
    progress = Progress(name, None, "tasks", interval_s=interval_s, bar=bar, stream=stream, clock=clock,
                        logger=logger, open_total=True)
    tasks = SparkTasks(sc, group, ignore)
    stop = threading.Event()
    period = poll_s if poll_s is not None else max(0.05, min(1.0, progress.interval_s))

    def poll() -> None:
        while not stop.wait(period):
            try:
                done, total = tasks.count()
            except Exception as exc:  # noqa: BLE001 - a gateway going away must not end the stage
                log.debug("%s: status tracker: %s", name, exc)
                continue
            if total:
                progress.set(done, total)

    thread = threading.Thread(target=poll, name=f"hitpredict-progress-{name}", daemon=True)
    thread.start()
    failed = False
    try:
        yield progress
    except BaseException:
        failed = True
        raise
    finally:
        stop.set()
        thread.join()
        try:
            done, total = tasks.count()
            if total:
                progress.set(done, total)
        except Exception as exc:  # noqa: BLE001
            log.debug("%s: status tracker: %s", name, exc)
        progress.close(failed=failed)
        if previous is None:
            sc.setLocalProperty(JOB_GROUP, None)  # type: ignore[arg-type]  # null removes the property


# --------------------------------------------------------------------------- training epochs

def _metric_value(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def metrics_text(logs: Mapping[str, Any] | None) -> str:
    """``loss 0.5213, auc 0.7100, val_loss 0.6002``: Keras logs, training metrics before validation ones."""
    items = [(k, _metric_value(v)) for k, v in (logs or {}).items() if k not in ("batch", "size", "lr")]
    items.sort(key=lambda kv: (kv[0].startswith("val_"), kv[0] != "loss" and kv[0] != "val_loss"))
    return ", ".join(f"{k} {v:.4f}" for k, v in items if v is not None)


class EpochProgress:
    """The lines of one training run: one per epoch (loss, metrics, seconds) and, inside an epoch that
    lasts longer than ``interval_s``, a batch line every ``interval_s`` seconds.

    ``train/worker.py`` calls it from a Keras callback on rank 0 (``train_begin``, ``epoch_begin``,
    ``batch_end``, ``epoch_end``); nothing here imports Keras, so the text and timing are tested alone.
    """

    def __init__(self, name: str, epochs: int, steps: int, interval_s: float | None = None,
                 clock: Clock = time.monotonic, logger: logging.Logger | None = None) -> None:
        self.name = name
        self.epochs = epochs
        self.steps = steps
        self.interval_s = default_interval_s() if interval_s is None else interval_s
        self.clock = clock
        self.logger = logger or log
        self.started = self.epoch_started = self._last_line = clock()
        self.epoch = 0

    def train_begin(self) -> None:
        """The fit starts."""
        self.started = self._last_line = self.clock()

    def epoch_begin(self, epoch: int) -> None:
        """Epoch ``epoch`` (0-based, as Keras counts) starts."""
        self.epoch = epoch
        self.epoch_started = self.clock()

    def batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Batch ``batch`` (0-based) of the epoch is done: a line when ``interval_s`` has passed since the last."""
        now = self.clock()
        if now - self._last_line < self.interval_s:
            return
        self._last_line = now
        done = batch + 1
        text = progress_text(f"{self.name}: epoch {self.epoch + 1}/{self.epochs}", done, self.steps, "batches",
                             now - self.epoch_started)
        metrics = metrics_text(logs)
        self.logger.info("%s%s", text, f"; {metrics}" if metrics else "")

    def epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Epoch ``epoch`` is done (validation included): its line, always."""
        now = self.clock()
        self._last_line = now
        metrics = metrics_text(logs)
        left = ""
        if epoch + 1 < self.epochs:
            left = f", ~{duration_text((now - self.started) * (self.epochs - epoch - 1) / (epoch + 1))} left"
        self.logger.info("%s: epoch %d/%d done in %s%s; %s elapsed%s", self.name, epoch + 1, self.epochs,
                         duration_text(now - self.epoch_started), f": {metrics}" if metrics else "",
                         duration_text(now - self.started), left)
