"""Batch prediction on Spark: a model bundle loaded once per task, never per row."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import pyarrow as pa

from hitpredict.keras_compat import ensure_keras2
from hitpredict.models import VECTOR_INPUTS
from hitpredict.train.bundle import ModelBundle

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

PREDICTIONS_DDL = "track_id string, label double, prediction array<float>"


def _prediction_task(bundle_dir: str, threads: int | None):
    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        ensure_keras2()
        if threads:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
        bundle = ModelBundle.load(bundle_dir)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            columns = batch.to_pydict()
            vectors = {name: columns[name] for name in VECTOR_INPUTS if name in columns}
            out = bundle.predict(columns["mel"], columns["summary"], vectors=vectors or None)
            yield pa.RecordBatch.from_pydict({
                "track_id": columns["track_id"], "label": columns.get("label") or [None] * batch.num_rows,
                "prediction": [row.tolist() for row in out],
            }, schema=pa.schema([("track_id", pa.string()), ("label", pa.float64()),
                                 ("prediction", pa.list_(pa.float32()))]))

    return task


def predict_examples(df: "DataFrame", bundle_dir: str, threads: int | None = None) -> "DataFrame":
    """``df`` (track_id, mel, summary[, label]) -> (track_id, label, prediction) with the bundle's model.

    ``prediction``: the model's outputs per row, float32, 1 value (binary, regression) or one per class
    (multiclass); ``label`` null where ``df`` has none. Each Spark task loads the bundle at ``bundle_dir``
    once, with ``threads`` TensorFlow threads per operation when given.
    """
    if "label" not in df.columns:
        from pyspark.sql import functions as F

        df = df.withColumn("label", F.lit(None).cast("double"))
    vectors = [name for name in VECTOR_INPUTS if name in df.columns]   # embedding, tags: when the rows have them
    return df.select("track_id", "mel", "summary", *vectors, "label").mapInArrow(
        _prediction_task(bundle_dir, threads), PREDICTIONS_DDL)
