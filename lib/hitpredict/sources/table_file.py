"""A label's catalogue file: CSV or Parquet, read in chunks of rows."""
from __future__ import annotations

import os
from typing import Iterator

import pandas as pd
import pyarrow.parquet as pq

from hitpredict.ingest import SourceError


def infer_kind(path: str) -> str:
    """``csv``, ``parquet`` or ``folder`` from a path."""
    lower = path.lower().rstrip("/")
    if lower.endswith((".csv", ".csv.gz", ".tsv")):
        return "csv"
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if "://" not in path and os.path.isdir(path):
        return "folder"
    if "://" in path and not os.path.splitext(lower)[1]:
        return "folder"
    raise SourceError(f"{path}: cannot tell the source kind; set ingest.source to csv, parquet or folder")


def read_chunks(path: str, kind: str, chunk_rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """Yield ``(first_row_number, rows)``; values are strings as written in the file (CSV)."""
    import fsspec

    try:
        if kind == "csv":
            sep = "\t" if path.lower().endswith(".tsv") else ","
            with fsspec.open(path, "rt", encoding="utf-8-sig", compression="infer", newline="") as handle:
                reader = pd.read_csv(handle, dtype=str, keep_default_na=False, sep=sep, chunksize=chunk_rows)
                first = 1
                for chunk in reader:
                    yield first, chunk
                    first += len(chunk)
        elif kind == "parquet":
            with fsspec.open(path, "rb") as handle:
                first = 1
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=chunk_rows):
                    frame = batch.to_pandas()
                    yield first, frame
                    first += len(frame)
        else:
            raise SourceError(f"{path}: {kind} is not a table file")
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot parse as {kind}: {str(exc).splitlines()[0]}") from None
