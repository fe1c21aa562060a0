"""A folder of audio files (local path or any fsspec URI): one catalogue row per file.

Metadata comes from the files' tags (mutagen: ID3, MP4, Vorbis, FLAC) where present,
from the file name otherwise (``Artist - Title.mp3``). Reading tags touches every
file, so it is fanned out over Spark executors.
"""
from __future__ import annotations

import functools
import logging
import os
import stat
from typing import TYPE_CHECKING, Iterator, Sequence

import pandas as pd

from hitpredict.audio_paths import local_path, outside_roots, real_roots
from hitpredict.ingest import SourceError
from hitpredict.spark import to_pandas

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

FOLDER_COLUMNS = ["audio_uri", "title", "artists", "isrc", "release_date", "genre"]


def list_audio_files(root: str, extensions: Sequence[str]) -> list[str]:
    """Every file under ``root`` (recursive) whose extension is in ``extensions``, sorted, as URIs/paths."""
    import fsspec

    fs, base = fsspec.core.url_to_fs(root)
    if not fs.exists(base):
        raise SourceError(f"{root}: no such folder")
    wanted = {e.lower().lstrip(".") for e in extensions}
    found = [p for p in fs.find(base) if p.rsplit(".", 1)[-1].lower() in wanted]
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return sorted(os.path.abspath(p) for p in found)
    return sorted(f"{protocol}://{p}" for p in found)


def _first(tags: object, *keys: str) -> str | None:
    for key in keys:
        try:
            value = tags[key]  # type: ignore[index]
        except (KeyError, ValueError, TypeError):
            continue
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def _may_open(uri: str, root: str | None) -> bool:
    """Whether reading ``uri``'s tags is safe: a local file must be a regular file under ``root``
    (a FIFO would block the open; a symlink out of the folder would read what it points at)."""
    path = local_path(uri)
    if path is None or root is None:
        return True
    if outside_roots(path, real_roots([root])):
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def describe_file(uri: str, root: str | None = None) -> dict[str, str | None]:
    """Catalogue fields of one audio file from its tags, falling back to its name.

    With ``root`` (the listed folder), a local file is opened only if it is a regular file
    under it; otherwise the name is all that is used (the fetcher refuses it later)."""
    import fsspec
    import mutagen

    stem = os.path.splitext(os.path.basename(uri))[0]
    name_artist, _, name_title = stem.partition(" - ")
    row: dict[str, str | None] = {
        "audio_uri": uri,
        "title": (name_title or stem).strip() or None,
        "artists": name_artist.strip() if name_title else None,
        "isrc": None, "release_date": None, "genre": None,
    }
    try:
        if not _may_open(uri, root):
            raise OSError("not a regular file under the folder")
        with fsspec.open(uri, "rb") as handle:
            audio = mutagen.File(handle, easy=True)
    except Exception as exc:  # noqa: BLE001 - unreadable tags: the file name is all we have
        log.debug("no tags in %s: %s", uri, exc)
        audio = None
    if audio is not None and audio.tags is not None:
        tags = audio.tags
        row["title"] = _first(tags, "title") or row["title"]
        artist = _first(tags, "artist", "albumartist")
        row["artists"] = artist.replace("/", ";") if artist else row["artists"]
        row["isrc"] = _first(tags, "isrc")
        row["release_date"] = _first(tags, "date", "originaldate")
        row["genre"] = _first(tags, "genre")
    return row


def _describe_partition(frames: Iterator[pd.DataFrame], root: str | None = None) -> Iterator[pd.DataFrame]:
    """Executor side: describe each file, keeping its listing order."""
    for frame in frames:
        rows = pd.DataFrame([describe_file(uri, root) for uri in frame["audio_uri"]], columns=FOLDER_COLUMNS)
        rows["order"] = frame["order"].to_numpy()
        yield rows


def read_folder(spark: "SparkSession", root: str, extensions: Sequence[str], partitions: int | None = None) -> pd.DataFrame:
    """One row per audio file under ``root``, tags read in parallel on the executors.

    Rows come back in file-name order, so their row numbers are stable between runs.
    """
    files = list_audio_files(root, extensions)
    if not files:
        return pd.DataFrame(columns=FOLDER_COLUMNS)
    partitions = partitions or max(1, min(len(files) // 50 + 1, spark.sparkContext.defaultParallelism * 4))
    paths = spark.createDataFrame(pd.DataFrame({"order": range(len(files)), "audio_uri": files}))
    schema = ", ".join(f"{c} string" for c in FOLDER_COLUMNS)
    local_root = local_path(root)
    describe = functools.partial(_describe_partition, root=os.path.abspath(local_root) if local_root else None)
    described = paths.repartition(partitions).mapInPandas(describe, schema + ", order long")
    return to_pandas(described).sort_values("order").drop(columns="order").reset_index(drop=True)
