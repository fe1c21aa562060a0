"""Catalogue rows from a label's file: mapping, validation, stable ids, duplicates.

Pure functions on pandas DataFrames (no Spark): the ingest job reads a source,
calls :func:`normalise_catalogue`, and writes the two frames it returns to the
``catalogue`` and ``rejects`` tables.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from hitpredict.audio_paths import local_path, outside_roots, real_roots
from hitpredict.errors import HitpredictError
from hitpredict.schemas import CATALOGUE, CATALOGUE_SOURCE_FIELDS, REJECTS

_ISRC = re.compile(r"^[A-Z]{2}[A-Z0-9]{3}\d{7}$")


class SourceError(HitpredictError, ValueError):
    """A source cannot be read at all (missing file, missing mapped column); one line."""


@dataclass
class NormalisedCatalogue:
    """The result of validating one batch of source rows."""

    rows: pd.DataFrame                       # catalogue schema
    rejects: pd.DataFrame                    # rejects schema
    counts: dict[str, int] = field(default_factory=dict)  # reason kind -> rows


def stable_track_id(*keys: str | None) -> str:
    """A track id derived from the first non-empty key (ISRC, audio URI or preview URL).

    The same key always gives the same id, so re-ingesting a file never creates a new track.
    """
    for key in keys:
        if key:
            return "trk-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]
    raise ValueError("no key to derive a track id from")


def normalise_isrc(value: str | None) -> str | None:
    """``'us-abc-24-00001'`` -> ``'USABC2400001'``; ``None`` if it is not a valid ISRC."""
    if not value:
        return None
    text = re.sub(r"[\s-]", "", value).upper()
    return text if _ISRC.match(text) else None


def parse_date(value: str | None, formats: Iterable[str]) -> dt.date | None:
    """Parse ``value`` with the first matching format; ``ValueError`` if none matches."""
    if value is None or value == "":
        return None
    for fmt in formats:
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(value)


def resolve_columns(mapping: Mapping[str, str | None], source_columns: Iterable[str]) -> dict[str, str | None]:
    """Explicit ``mapping`` entries, plus every other field whose name the source has as a column."""
    present = set(map(str, source_columns))
    resolved: dict[str, str | None] = {f: f for f in CATALOGUE_SOURCE_FIELDS if f in present}
    resolved.update(mapping)
    return resolved


def clean_value(value: Any) -> str | None:
    """A source cell as stripped text; ``None`` for missing, NaN or blank."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def normalise_catalogue(
    raw: pd.DataFrame,
    columns: Mapping[str, str | None],
    source: str,
    *,
    first_row_number: int = 1,
    artist_separator: str = ";",
    date_formats: Iterable[str] = ("%Y-%m-%d", "%Y-%m", "%Y", "%d/%m/%Y", "%Y/%m/%d"),
    existing: Mapping[str, Mapping[str, str]] | None = None,
    ingested_at: dt.datetime | None = None,
    audio_roots: Iterable[str] | None = None,
    base_dir: str | None = None,
) -> NormalisedCatalogue:
    """Map, validate and de-duplicate source rows.

    Parameters
    ----------
    raw : the source rows, as read (strings or numbers).
    columns : catalogue field -> source column (``None`` or absent: the source has no such column).
    source : names the source in every row and reject (e.g. ``"csv:labels.csv"``).
    first_row_number : 1-based number of ``raw``'s first data row in the source.
    existing : keys already in the catalogue, each mapped to its track id:
        ``{"track_id": {id: id}, "isrc": {isrc: id}, "preview_url": {url: id}, "audio_uri": {uri: id}}``.
    audio_roots : local folders a local ``audio_uri`` must lie in (symlinks resolved); a row
        pointing elsewhere, or at /proc, /sys or /dev, is rejected (``audio_outside_roots``).
        ``None``: not checked. Other schemes are left to the fetcher (``fetch.allow_schemes``).
    base_dir : folder a relative local ``audio_uri`` is read from (the catalogue file's); it is
        stored as the absolute path. Without one, a relative path is rejected when roots are checked.

    Returns
    -------
    NormalisedCatalogue : usable rows (catalogue schema) and rejects with row number and reason.
    A row whose track id is already in the catalogue is skipped (counted as
    ``already_in_catalogue``): re-ingesting a file adds nothing. A row that repeats a
    track under another id (same ISRC, preview URL or audio URI as an earlier row or a
    catalogue track), or an earlier row's id, is rejected as a duplicate naming that track.
    """
    missing = [f"{name} -> {col!r}" for name, col in columns.items() if col and col not in raw.columns]
    if missing:
        raise SourceError(
            f"{source}: mapped column(s) not found: {', '.join(missing)}; the source has: {', '.join(map(str, raw.columns))}"
        )
    unknown = sorted(set(columns) - set(CATALOGUE_SOURCE_FIELDS))
    if unknown:
        raise SourceError(f"{source}: cannot map to unknown field(s) {', '.join(unknown)}; fields: {', '.join(CATALOGUE_SOURCE_FIELDS)}")
    now = ingested_at or dt.datetime.now(dt.timezone.utc)
    date_formats = tuple(date_formats)
    seen: dict[str, dict[str, str]] = {k: {} for k in ("track_id", "isrc", "preview_url", "audio_uri")}
    for key, values in (existing or {}).items():
        seen[key].update({v: t for v, t in values.items() if v})
    known_ids = set(seen["track_id"])
    roots = real_roots(audio_roots) if audio_roots is not None else None
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    records = raw.to_dict("records")

    def reject(number: int, record: dict[str, Any], kind: str, reason: str, track_id: str | None = None) -> None:
        counts[kind] = counts.get(kind, 0) + 1
        bad.append({
            "source": source, "row_number": number, "track_id": track_id, "reason": reason,
            "raw": json.dumps({str(k): clean_value(v) for k, v in record.items()}, ensure_ascii=False),
            "rejected_at": now,
        })

    for offset, record in enumerate(records):
        number = first_row_number + offset
        value = {name: clean_value(record.get(col)) if col else None for name, col in columns.items()}
        isrc_raw = value.get("isrc")
        isrc = normalise_isrc(isrc_raw)
        audio_uri, preview_url = value.get("audio_uri"), value.get("preview_url")
        refused = None
        path = local_path(audio_uri) if audio_uri and roots is not None else None
        if path is not None and roots is not None:  # roots is set whenever path is
            if not os.path.isabs(path) and base_dir:
                audio_uri = path = os.path.normpath(os.path.join(os.path.abspath(base_dir), path))
            refused = outside_roots(path, roots) if os.path.isabs(path) else \
                f"{path!r} is a relative path and the source has no folder"
        if columns.get("track_id"):
            track_id = value.get("track_id")
            if not track_id:
                reject(number, record, "no_id", f"row {number}: no track id (column {columns['track_id']!r} is empty)")
                continue
        else:
            track_id = stable_track_id(isrc, audio_uri, preview_url) if (isrc or audio_uri or preview_url) else None
            if not track_id:
                reject(number, record, "no_id", f"row {number}: no track id, ISRC or audio reference to derive one from")
                continue
        if track_id in known_ids:
            counts["already_in_catalogue"] = counts.get("already_in_catalogue", 0) + 1
            continue
        if not audio_uri and not preview_url:
            reject(number, record, "no_audio", f"row {number}: no audio reference (audio_uri and preview_url are empty)",
                   track_id)
            continue
        if refused:
            reject(number, record, "audio_outside_roots", f"row {number}: audio_uri refused: {refused}", track_id)
            continue
        try:
            release_date = parse_date(value.get("release_date"), date_formats)
        except ValueError:
            reject(number, record, "bad_date",
                   f"row {number}: unparsable release_date {value['release_date']!r} (formats: {', '.join(date_formats)})",
                   track_id)
            continue
        popularity_text = value.get("popularity")
        popularity: float | None = None
        if popularity_text is not None:
            try:
                popularity = float(popularity_text)
            except ValueError:
                reject(number, record, "bad_popularity", f"row {number}: popularity {popularity_text!r} is not a number",
                       track_id)
                continue
            if not 0 <= popularity <= 100 or np.isnan(popularity):
                reject(number, record, "bad_popularity", f"row {number}: popularity {popularity:g} outside 0-100",
                       track_id)
                continue
        streams_text = value.get("streams")
        streams: int | None = None
        if streams_text is not None:
            try:
                streams = int(float(streams_text.replace(",", "")))
                if streams < 0:
                    raise ValueError
            except ValueError:
                reject(number, record, "bad_streams", f"row {number}: streams {value['streams']!r} is not a count",
                       track_id)
                continue
        keys = {"track_id": track_id, "isrc": isrc, "preview_url": preview_url, "audio_uri": audio_uri}
        clash = next(((k, v) for k, v in keys.items() if v and v in seen[k]), None)
        if clash:
            kind, key = clash
            reject(number, record, "duplicate",
                   f"row {number}: duplicate of {seen[kind][key]} (same {kind} {key!r})", track_id)
            continue
        for k, v in keys.items():
            if v:
                seen[k][v] = track_id
        artists = [a.strip() for a in (value.get("artists") or "").split(artist_separator) if a.strip()]
        good.append({
            "track_id": track_id, "source": source, "source_row": number, "title": value.get("title"),
            "artists": artists or None, "primary_artist": artists[0] if artists else None, "isrc": isrc,
            "release_date": release_date, "audio_uri": audio_uri, "preview_url": preview_url,
            "popularity": popularity,
            "popularity_source": None if popularity is None else clean_value(record.get("popularity_source")) or "label",
            "streams": streams, "region": value.get("region"), "genre": value.get("genre"), "ingested_at": now,
        })
        if isrc_raw and not isrc:
            counts["isrc_invalid_dropped"] = counts.get("isrc_invalid_dropped", 0) + 1
    counts["ok"] = len(good)
    return NormalisedCatalogue(_frame(good, CATALOGUE), _frame(bad, REJECTS), counts)


def _frame(rows: list[dict[str, Any]], schema) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=schema.names)
