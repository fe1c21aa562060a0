"""The embedded demo (``hitpredict demo``): every stage, end to end, on the sample catalogue.

It generates the sample catalogue (first run only), then runs ingest_catalogue, fetch_previews
and extract_features; with training, build_dataset and train_model for each target of
``demo.models``, score_catalogue with the models it trained and the report (without training:
build_dataset for ``dataset.target`` only). The previews are served by a loopback preview server
that the demo starts (as a label's CDN would serve them), so the fetch stage really downloads
them over HTTP.
"""
from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hitpredict.config import Config, ModelRef
from hitpredict.families import ModelFamily
from hitpredict.lake import TableInfo, open_lake
from hitpredict.preview_server import PreviewServer
from hitpredict.scoring.report import Report, write_report
from hitpredict.stages import (build_dataset, extract_features, fetch_previews, ingest_catalogue, score_catalogue,
                               train_model)
from hitpredict.stages.base import StageReport
from hitpredict.synth.catalogue import ensure_sample_catalogue, write_catalogue_csv
from hitpredict.targets import target_named

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

#: The demo's stand-ins for the families that read the pretrained embedding, when embeddings are off.
WITHOUT_EMBEDDINGS: dict[str, ModelFamily] = {"embed": "mlp", "fusion": "inception"}


@dataclass
class DemoReport:
    """What one demo run did: each stage's report in order, the tables and a few rows of each, the
    preview server's address, the training runs, the scoring run and the written report."""

    stages: list[StageReport] = field(default_factory=list)
    tables: list[TableInfo] = field(default_factory=list)
    samples: dict[str, list[dict]] = field(default_factory=dict)
    preview_server: str = ""
    training: "train_model.TrainResult | None" = None      # the popularity model's run
    trainings: list["train_model.TrainResult"] = field(default_factory=list)
    scoring: "score_catalogue.ScoreResult | None" = None
    report: Report | None = None


def _start_server(directory, port: int) -> PreviewServer:
    """A started preview server for ``directory`` on ``port``, or on a free port if that one is busy."""
    try:
        return PreviewServer(directory=directory, port=port).start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise
        log.warning("port %d is busy; serving previews on a free port instead", port)
        return PreviewServer(directory=directory).start()


def run_demo(config: Config, spark: "SparkSession", train: bool = True) -> DemoReport:
    """Generate the sample (first run only), then ingest, fetch and extract features; with
    ``train``, build a dataset and train a model for each target of ``demo.models`` (Horovod,
    ``train.num_proc`` processes), score the catalogue with them and write the report."""
    report = DemoReport()
    started = time.monotonic()
    sample = ensure_sample_catalogue(
        config.sample.dir, config.sample.tracks, config.sample.artists, seed=config.sample.seed,
        seconds=config.sample.seconds, sample_rate=config.audio.sample_rate,
        progress_interval_s=config.progress.interval_s, progress_bar=config.progress.bar,
    )
    report.stages.append(StageReport("generate_sample", config.sample.tracks, len(sample.rows),
                                     seconds=time.monotonic() - started, notes=f"MP3s in {sample.audio_dir}"))
    lake = open_lake(config.lake, spark)
    # The demo's previews come from its own loopback server: allow that address only.
    allow = sorted({*config.fetch.allow_hosts, "127.0.0.1"})
    config = config.model_copy(update={"fetch": config.fetch.model_copy(update={"allow_hosts": allow})})
    server = _start_server(sample.audio_dir, config.sample.preview_port)
    try:
        report.preview_server = server.base_url
        csv_path = write_catalogue_csv(sample.rows, sample.root / "catalogue_previews.csv", sample.audio_dir,
                                       preview_base_url=server.base_url, include_audio_uri=False)
        report.stages.append(ingest_catalogue.run(config, spark, lake, str(csv_path)))
        report.stages.append(fetch_previews.run(config, spark, lake))
    finally:
        server.stop()
    report.stages.append(extract_features.run(config, spark, lake))
    if not train:
        report.stages.append(build_dataset.run(config, spark, lake))
    else:
        refs = []
        for target, family in config.demo.models.items():
            if family in WITHOUT_EMBEDDINGS and not config.embedding.active:
                log.warning("embeddings are off (embedding.enabled, or musicnn not installed): the demo trains %s "
                            "for %s instead of %s", WITHOUT_EMBEDDINGS[family], target, family)
                family = WITHOUT_EMBEDDINGS[family]
            settings = config.model_copy(update={"dataset": config.dataset.model_copy(update={"target": target})})
            report.stages.append(build_dataset.run(settings, spark, lake))
            result = train_model.run(settings, spark, lake, family=family)
            report.stages.append(result.report)
            report.trainings.append(result)
            if target_named(target).label_column == "popularity" and report.training is None:
                report.training = result
            refs.append(ModelRef(name=result.model_name, version=result.model_version) if result.model_version
                        else ModelRef(path=result.bundle_dir))
        config = config.model_copy(update={"score": config.score.model_copy(update={"models": refs})})
        report.scoring = score_catalogue.run(config, spark, lake)
        report.stages.append(report.scoring.report)
        s = config.score
        report.report = write_report(lake, s.report_dir, s.report_top, s.report_strips, s.segment_seconds)
    report.tables = lake.tables()
    for info in report.tables:
        head = lake.read(info.name).limit(3)
        report.samples[info.name] = [row.asDict() for row in head.collect()]
    return report
