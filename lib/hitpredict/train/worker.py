"""The body of one Horovod training process (runs inside a Spark task, or a HorovodRunner process).

Each process reads its own shard of the Petastorm-materialised training and validation
DataFrames, decodes spectrograms in the tf.data pipeline, and trains the same Keras
model: the optimizer averages gradients across processes, rank 0's initial weights are
broadcast, the learning rate is scaled by the number of processes after a warm-up,
metrics are averaged across ranks before early stopping sees them, and only rank 0
writes checkpoints. Rank 0 returns the best weights and the history.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from hitpredict.keras_compat import ensure_keras2, horovod_keras, keras
from hitpredict.logs import configure_worker, quiet_tensorflow
from hitpredict.models import VECTOR_INPUTS, build_model
from hitpredict.models.heads import loss_and_metrics
from hitpredict.progress import EpochProgress
from hitpredict.train.plan import TrainPlan

log = logging.getLogger(__name__)


def _label_fn(task: str) -> Any:
    """Labels of a batch as the loss wants them: int32 class indices, or float32 (batch, 1)."""
    import tensorflow as tf

    if task == "multiclass":
        return lambda label: tf.cast(label, tf.int32)
    return lambda label: tf.reshape(tf.cast(label, tf.float32), (-1, 1))


def tf_dataset(batches: Any, plan: TrainPlan, training: bool, rank: int) -> Any:
    """Petastorm batches (namedtuples of columns) -> (named model inputs, labels), prefetched.

    Augmented (``plan.augment``, seeded per ``rank``) when ``training``; inputs as
    :func:`~hitpredict.train.inputs.model_inputs` makes them (the batches carry an ``embedding`` / ``tags``
    column when ``plan.inputs`` reads it), labels int32 (batch,) for multiclass and float32 (batch, 1) otherwise.
    """
    from hitpredict.train.inputs import model_inputs   # loads TensorFlow

    label = _label_fn(plan.spec.task)
    augment = plan.augment if training else None
    seed = plan.seed + 7919 * rank

    vector_names = [name for name in VECTOR_INPUTS if name in plan.inputs]   # columns the batches carry

    def convert(batch: Any) -> Any:
        vectors = {name: getattr(batch, name) for name in vector_names}
        return model_inputs(batch.mel, batch.summary, plan.inputs, plan.spec.n_mels, plan.spec.frames, plan.norm,
                            augment, seed, vectors=vectors), label(batch.label)

    import tensorflow as tf

    # Plain TensorFlow ops, no Python control flow on tensors: nothing for AutoGraph to convert.
    # Converting it made AutoGraph walk into hitpredict helpers and warn with the repr of what it
    # could not convert; one such repr (a bound method of os.environ) printed the whole environment.
    return batches.map(tf.autograph.experimental.do_not_convert(convert),
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def reader_seed(seed: int, rank: int) -> int:
    """The Petastorm reader seed of process ``rank`` for the run's ``seed``: never 0, which Petastorm takes for
    "unseeded" and then shuffles row groups differently on every run."""
    return (seed * 7919 + rank) % (2**31 - 1) + 1


def _pin_device(hvd: Any, threads: int | None) -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        gpu = gpus[hvd.local_rank() % len(gpus)]
        tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpu, "GPU")
        return f"GPU {hvd.local_rank() % len(gpus)}"
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    return "CPU"


class _Throughput:
    """Keras callback: training-only seconds of each epoch (validation excluded)."""

    def __init__(self) -> None:
        class Callback(keras().callbacks.Callback):  # type: ignore[misc]  # Keras 2's base, found at run time
            def __init__(inner) -> None:
                super().__init__()
                inner.seconds: list[float] = []
                inner._start = 0.0
                inner._open = False

            def on_epoch_begin(inner, epoch: int, logs: Any = None) -> None:
                inner._start, inner._open = time.perf_counter(), True

            def _close(inner) -> None:
                if inner._open:
                    inner.seconds.append(time.perf_counter() - inner._start)
                    inner._open = False

            def on_test_begin(inner, logs: Any = None) -> None:
                inner._close()

            def on_epoch_end(inner, epoch: int, logs: Any = None) -> None:
                inner._close()

        self.callback = Callback()


def validation_callback(converter: Any, plan: TrainPlan, rank: int, reader: dict[str, Any]) -> Any:
    """A Keras callback that, at the end of every epoch, evaluates the model on one whole pass over this
    process's validation shard in a fixed order, and puts ``val_<metric>`` into the epoch's logs (before
    Horovod averages them and early stopping reads them).

    Keras's own validation on an endless Petastorm stream gave each epoch the rows after the last one's,
    less what its prefetch buffers held: a draw that changed from run to run. A one-pass dataset that
    Keras starts again came back empty from the third epoch on (Keras stops at the step count it learnt,
    before Petastorm's reader sees its end and may be reset). So each epoch opens a reader of its own.
    """
    class Callback(keras().callbacks.Callback):  # type: ignore[misc]  # Keras 2's base, found at run time
        def on_epoch_end(inner, epoch: int, logs: Any = None) -> None:
            with converter.make_tf_dataset(batch_size=plan.batch_size, num_epochs=1, shuffle_row_groups=False,
                                           seed=reader_seed(plan.seed, rank), **reader) as batches:
                results = inner.model.evaluate(tf_dataset(batches, plan, False, rank), verbose=0, return_dict=True)
            if logs is not None:
                logs.update({f"val_{name}": float(value) for name, value in results.items()})

    return Callback()


def progress_callback(progress: EpochProgress) -> Any:
    """A Keras callback that feeds ``progress`` (a line per epoch, batch lines in long epochs).

    It takes Keras's logs as tensors (``_supports_tf_logs``), so it adds no host copy of a batch's
    metrics of its own; the values are read only when a line is due.
    """
    class Callback(keras().callbacks.Callback):  # type: ignore[misc]  # Keras 2's base, found at run time
        def __init__(inner) -> None:
            super().__init__()
            inner._supports_tf_logs = True

        def on_train_begin(inner, logs: Any = None) -> None:
            progress.train_begin()

        def on_epoch_begin(inner, epoch: int, logs: Any = None) -> None:
            progress.epoch_begin(epoch)

        def on_train_batch_end(inner, batch: int, logs: Any = None) -> None:
            progress.batch_end(batch, logs)

        def on_epoch_end(inner, epoch: int, logs: Any = None) -> None:
            progress.epoch_end(epoch, logs)

    return Callback()


def train_process(plan: TrainPlan, train_converter: Any, validation_converter: Any) -> dict[str, Any]:
    """Train ``plan`` as one Horovod process; rank 0 returns weights, history and timings.

    Every rank returns ``rank``, ``size``, ``device``, ``seconds`` (the whole fit), ``epoch_seconds``
    (training only, per epoch), ``steps_per_epoch`` and ``samples_per_epoch``; rank 0 adds ``history``
    (Keras metric name -> one value per epoch) and ``weights`` (the best epoch's, as numpy arrays).
    """
    ensure_keras2()
    configure_worker()   # the driver's verbosity, a redacting log handler, before TensorFlow loads
    hvd = horovod_keras()
    hvd.init()
    import tensorflow as tf

    quiet_tensorflow()

    device = _pin_device(hvd, plan.threads_per_process)
    rank, size = hvd.rank(), hvd.size()
    tf.random.set_seed(plan.seed + rank)
    # Same dataset, seed and process count -> the same weights: deterministic kernels, and tf.data runs
    # the augmenting map in order (the readers below are seeded and ordered too).
    tf.config.experimental.enable_op_determinism()
    k = keras()
    model = build_model(plan.family, plan.spec)
    loss, metrics = loss_and_metrics(plan.spec)
    scaled_lr = plan.learning_rate * size
    optimizer = hvd.DistributedOptimizer(k.optimizers.Adam(learning_rate=scaled_lr))
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    steps = plan.steps_per_epoch(size)
    throughput = _Throughput()
    reader = {"cur_shard": rank, "shard_count": size, "workers_count": plan.reader_workers}
    callbacks: list[Any] = [
        throughput.callback,   # first: an epoch's time is training alone
        validation_callback(validation_converter, plan, rank, reader),   # before the metrics are averaged
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),  # before early stopping: every rank decides alike
    ]
    if plan.warmup_epochs and size > 1:
        callbacks.append(hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=scaled_lr, warmup_epochs=plan.warmup_epochs, steps_per_epoch=steps, verbose=0))
    callbacks += [
        k.callbacks.EarlyStopping(monitor="val_loss", patience=plan.patience, restore_best_weights=True),
    ]
    if rank == 0 and plan.checkpoint_dir:
        os.makedirs(plan.checkpoint_dir, exist_ok=True)
        callbacks.append(k.callbacks.ModelCheckpoint(
            os.path.join(plan.checkpoint_dir, "best.weights.h5"), monitor="val_loss", save_best_only=True,
            save_weights_only=True))
    if rank == 0:   # after MetricAverageCallback: the epoch line shows the metrics averaged over the ranks
        callbacks.append(progress_callback(EpochProgress(f"train_model {plan.family}", plan.epochs, steps,
                                                         logger=log)))
    started = time.perf_counter()
    # Training order: Petastorm shuffles the row groups and the rows within each, seeded (tf.data's shuffle
    # buffer, seeded only through TensorFlow's op counter, gave runs that differed).
    with train_converter.make_tf_dataset(batch_size=plan.batch_size, num_epochs=None, shuffle_rows=True,
                                         seed=reader_seed(plan.seed, rank), **reader) as train_batches:
        history = model.fit(
            tf_dataset(train_batches, plan, True, rank), steps_per_epoch=steps, epochs=plan.epochs,
            callbacks=callbacks, verbose=0,
        )
    result: dict[str, Any] = {
        "rank": rank, "size": size, "device": device, "seconds": time.perf_counter() - started,
        "epoch_seconds": throughput.callback.seconds, "steps_per_epoch": steps,
        "samples_per_epoch": steps * plan.batch_size,
    }
    if rank == 0:
        result["history"] = {key: [float(v) for v in values] for key, values in history.history.items()}
        result["weights"] = model.get_weights()
    return result
