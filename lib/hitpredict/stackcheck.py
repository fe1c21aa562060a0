"""Proof that the pinned stack works together: Petastorm feeding Horovod-distributed Keras.

``hitpredict check-stack`` runs it by hand; the test suite runs it on every CI run.
A tiny linear model is trained by ``num_proc`` gloo processes under
``horovod.spark.run``, each reading its own shard of a Petastorm converter.
"""
from __future__ import annotations

import importlib
import logging
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any

from hitpredict.keras_compat import ensure_keras2, horovod_keras, keras
from hitpredict.train.launcher import horovod_spark_run, worker_env

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: The planted relation the smoke model must recover: y = SLOPE * x + INTERCEPT.
SLOPE, INTERCEPT = 3.0, -1.0


def _train_on_shard(converter: Any, steps: int, epochs: int) -> dict[str, Any]:
    """Body of one Horovod process (runs inside a Spark task)."""
    hvd = horovod_keras()
    hvd.init()
    import tensorflow as tf

    tf.random.set_seed(1)
    k = keras()
    model = k.Sequential([k.layers.Input(shape=(1,)), k.layers.Dense(1)])
    optimizer = hvd.DistributedOptimizer(k.optimizers.SGD(learning_rate=0.05 * hvd.size()))
    model.compile(optimizer=optimizer, loss="mse")
    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
    ]
    with converter.make_tf_dataset(
        batch_size=32, cur_shard=hvd.rank(), shard_count=hvd.size(), num_epochs=None, workers_count=1
    ) as dataset:
        dataset = dataset.map(lambda batch: (tf.reshape(batch.x, (-1, 1)), tf.reshape(batch.y, (-1, 1))))
        history = model.fit(dataset, steps_per_epoch=steps, epochs=epochs, callbacks=callbacks, verbose=0)
    weight, bias = (w.ravel().tolist() for w in model.get_weights())
    return {
        "rank": hvd.rank(),
        "size": hvd.size(),
        "loss": [float(v) for v in history.history["loss"]],
        "slope": weight[0],
        "intercept": bias[0],
    }


def run_horovod_smoke(
    spark: "SparkSession", num_proc: int = 2, rows: int = 2000, steps: int = 40, epochs: int = 4,
    cache_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Train the smoke model y = SLOPE * x + INTERCEPT with ``num_proc`` Horovod processes, each on its own
    shard of a Petastorm converter over ``rows`` Spark rows (``epochs`` x ``steps`` batches of 32).

    Returns one dict per rank, sorted by rank: ``rank``, ``size``, ``loss`` (per-epoch training MSE, a
    list of ``epochs`` floats), and the learned ``slope`` and ``intercept``.
    """
    ensure_keras2()
    from petastorm.spark import SparkDatasetConverter, make_spark_converter
    from pyspark.sql import functions as F

    cache_dir = cache_dir or tempfile.mkdtemp(prefix="hitpredict-petastorm-")
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, f"file://{os.path.abspath(cache_dir)}")
    df = (spark.range(rows).withColumn("x", (F.rand(seed=3) * 2 - 1).cast("float"))
          .withColumn("y", (F.col("x") * SLOPE + INTERCEPT).cast("float")).select("x", "y"))
    converter = make_spark_converter(df.repartition(num_proc))
    started = time.monotonic()
    try:
        results = horovod_spark_run(_train_on_shard, num_proc, worker_env(), args=(converter, steps, epochs))
    finally:
        converter.delete()
    log.info("horovod smoke: %d processes trained in %.1fs", num_proc, time.monotonic() - started)
    return sorted(results, key=lambda r: r["rank"])


def verify_imports() -> dict[str, str]:
    """Import every part of the pinned stack and check its known traps (Keras 3 in place of Keras 2,
    see :mod:`hitpredict.keras_compat`; pyarrow too new for Petastorm; Horovod without gloo; no MP3 in
    libsndfile).

    Returns ``{package: version}``; raises ``RuntimeError`` naming the part that fails.
    """
    ensure_keras2()
    versions: dict[str, str] = {}
    for module in ("pyspark", "numpy", "pyarrow", "pandas", "tensorflow", "tf_keras", "petastorm",
                   "horovod", "deltalake", "librosa", "soundfile", "spotipy", "requests", "yaml",
                   "cloudpickle", "pydantic", "mlflow"):
        try:
            versions[module] = getattr(importlib.import_module(module), "__version__", "?")
        except Exception as exc:  # noqa: BLE001 - report which part of the stack is broken
            raise RuntimeError(f"cannot import {module}: {exc}") from exc
    import soundfile
    import tensorflow as tf

    if not tf.keras.__name__.startswith("tf_keras"):
        raise RuntimeError("tf.keras is Keras 3: TF_USE_LEGACY_KERAS=1 was not in effect")
    import petastorm.spark  # noqa: F401 - fails with pyarrow >= 15 (pyarrow.filesystem)

    hvd_keras = horovod_keras()
    import horovod.tensorflow as hvd_tf

    if not hvd_tf.gloo_built():
        raise RuntimeError("horovod was built without gloo: rebuild with HOROVOD_WITH_GLOO=1 (make setup)")
    if not hasattr(hvd_keras, "DistributedOptimizer"):
        raise RuntimeError("horovod.tensorflow.keras is incomplete")
    if "MP3" not in soundfile.available_formats():
        raise RuntimeError(f"libsndfile {soundfile.__libsndfile_version__} cannot encode/decode MP3")
    return versions
