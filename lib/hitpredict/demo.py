"""The embedded demo: the stages that exist so far, end to end, on the sample catalogue."""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hitpredict.config import Config
from hitpredict.lake import Lake, TableInfo, open_lake
from hitpredict.schemas import spark_schema
from hitpredict.synth.catalogue import SampleCatalogue, ensure_sample_catalogue

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


@dataclass
class StageReport:
    """What one stage did: rows in, rows written, seconds."""

    name: str
    rows_in: int
    rows_written: int
    seconds: float
    notes: str = ""


@dataclass
class DemoReport:
    stages: list[StageReport] = field(default_factory=list)
    tables: list[TableInfo] = field(default_factory=list)
    samples: dict[str, list[dict]] = field(default_factory=dict)


def load_sample_catalogue(sample: SampleCatalogue, lake: Lake, spark: "SparkSession") -> StageReport:
    """Append the sample's tracks that the ``catalogue`` table does not hold yet."""
    started = time.monotonic()
    now = dt.datetime.now(dt.timezone.utc)
    rows = [
        {
            "track_id": r.track_id, "source": "sample", "source_row": i + 1, "title": r.title,
            "artists": [r.artist], "primary_artist": r.artist, "isrc": r.isrc,
            "release_date": dt.date.fromisoformat(r.release_date),
            "audio_uri": str((sample.audio_dir / r.audio_file).resolve()), "preview_url": None,
            "popularity": r.popularity, "popularity_source": "label", "streams": r.streams,
            "region": r.region, "genre": "hip hop", "ingested_at": now,
        }
        for i, r in enumerate(sample.rows)
    ]
    incoming = spark.createDataFrame(rows, spark_schema("catalogue"))
    new = incoming.join(lake.read("catalogue").select("track_id"), "track_id", "left_anti")
    written = new.count()
    if written or not lake.exists("catalogue"):
        lake.append("catalogue", new, commit_info={"hitpredict.stage": "load_sample"})
    return StageReport("load_sample", len(rows), written, time.monotonic() - started,
                       "tracks already in the catalogue are skipped")


def run_demo(config: Config, spark: "SparkSession") -> DemoReport:
    """Generate the sample catalogue (first run only), run the stages, describe the tables."""
    report = DemoReport()
    started = time.monotonic()
    sample = ensure_sample_catalogue(
        config.sample.dir, config.sample.tracks, config.sample.artists, seed=config.sample.seed,
        seconds=config.sample.seconds, sample_rate=config.audio.sample_rate,
    )
    report.stages.append(StageReport("generate_sample", config.sample.tracks, len(sample.rows),
                                     time.monotonic() - started, f"MP3s in {sample.audio_dir}"))
    lake = open_lake(config.lake, spark)
    report.stages.append(load_sample_catalogue(sample, lake, spark))
    report.tables = lake.tables()
    for info in report.tables:
        head = lake.read(info.name).orderBy("track_id").limit(5)
        report.samples[info.name] = [row.asDict() for row in head.collect()]
    return report
