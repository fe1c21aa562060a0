"""score-folder: a folder of unreleased demos straight through ingest -> fetch -> features -> scores.

The spectrograms are made with the audio parameters the models were trained with (read
from the models, never from the current config), so a config edited since training
cannot silently change what the model hears. The pretrained embedding (``embedding`` config) is
computed only when one of the models reads it (``embedding`` or ``tags`` inputs), as ``score FILE``
does: for a spectrogram model it would cost several times the spectrogram and be thrown away.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hitpredict.audio_params import AudioParams
from hitpredict.config import Config
from hitpredict.lake import Lake
from hitpredict.models import VECTOR_INPUTS
from hitpredict.scoring.registry import ResolvedModel
from hitpredict.scoring.scorer import ScoreError
from hitpredict.stages import extract_features, fetch_previews, ingest_catalogue, score_catalogue
from hitpredict.stages.base import StageReport

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


@dataclass
class FolderResult:
    """What a score-folder run did: the report of each stage it ran, the score result and the
    folder's track ids."""

    stages: list[StageReport]
    score: score_catalogue.ScoreResult
    track_ids: list[str]


def folder_track_ids(lake: Lake, folder: str) -> list[str]:
    """Catalogue tracks whose audio file lies under ``folder``."""
    root = os.path.abspath(folder) if "://" not in folder else folder.rstrip("/")
    rows = lake.read_columns("catalogue", ["track_id", "audio_uri"]).to_pylist()
    return sorted(r["track_id"] for r in rows if r["audio_uri"] and r["audio_uri"].startswith(root.rstrip("/") + "/"))


def model_audio_config(config: Config, models: list[ResolvedModel]) -> Config:
    """``config`` with its audio section set to the models' (which must agree), its ingest source set
    to ``folder`` and its embedding off when no model reads one (``embedding`` or ``tags`` inputs);
    ``ScoreError`` if the models disagree."""
    params = {AudioParams.from_dict(m.audio) for m in models}
    if len(params) > 1:
        raise ScoreError("the models were trained on different audio parameters: "
                         + "; ".join(f"{m.label}: {AudioParams.from_dict(m.audio)!r}" for m in models)
                         + "; score a folder with models that share them")
    (wanted,) = params
    audio = config.audio.model_copy(update=wanted.as_dict())
    embedding = config.embedding
    if embedding.active and not any(set(score_catalogue.reads(m)) & set(VECTOR_INPUTS) for m in models):
        embedding = embedding.model_copy(update={"enabled": False})
    return config.model_copy(update={"audio": audio, "embedding": embedding,
                                     "ingest": config.ingest.model_copy(update={"source": "folder"})})


def run(config: Config, spark: "SparkSession", lake: Lake, folder: str) -> FolderResult:
    """Ingest ``folder``'s audio files, read them, extract features with the models' audio
    parameters and score them (only them) with every model of ``score.models``."""
    models = score_catalogue.resolve_models(config)
    config = model_audio_config(config, models)
    stages = [ingest_catalogue.run(config, spark, lake, folder)]
    ids = folder_track_ids(lake, folder)
    if not ids:
        raise ScoreError(f"{folder}: no audio files with extensions {', '.join(config.ingest.audio_extensions)}")
    stages.append(fetch_previews.run(config, spark, lake, only=set(ids)))
    stages.append(extract_features.run(config, spark, lake, only=set(ids)))
    score = score_catalogue.run(config, spark, lake, models=models, only=set(ids))
    stages.append(score.report)
    return FolderResult(stages, score, ids)
