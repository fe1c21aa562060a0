"""Scores of tracks from their stored feature columns: the same code for the Spark job
and for one file, so both give the same numbers.

Each model fills the columns of its target: a ``popular`` model ``prob_popular``, a
``popularity`` model ``popularity_pred``, both with their ``percentile`` in the model's
reference distribution and a ``segment_importance`` per segment of the window; an
``artist`` model ``similar_artists`` (top k); a ``region`` model ``region``.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from hitpredict.features import MelParams
from hitpredict.train.bundle import ModelBundle

#: Model target -> the scores column its main output goes to.
OUTPUT_COLUMN = {"popular": "prob_popular", "popularity": "popularity_pred", "artist": "similar_artists",
                 "region": "region"}
EXPLAINED_TARGETS = ("popular", "popularity")


class ScoreError(ValueError):
    """Scoring cannot start (nothing to score, a model that does not fit the data); one line."""


@dataclass(frozen=True)
class ScoreSettings:
    top_k_artists: int = 5
    explain: bool = True
    segment_seconds: float = 3.0


def mel_params(audio: dict[str, Any]) -> MelParams:
    """The spectrogram parameters in an audio description (a model's, or a features row's)."""
    return MelParams(int(audio["sample_rate"]), float(audio["clip_seconds"]), int(audio["n_fft"]),
                     int(audio["hop_length"]), int(audio["n_mels"]))


def params_of_features(audio_params_json: str) -> MelParams:
    return mel_params(json.loads(audio_params_json))


def segment_bounds(params: MelParams, segment_seconds: float) -> list[tuple[int, int]]:
    """Frame ranges [begin, end) of consecutive ``segment_seconds`` segments of the window; a
    frame belongs to the segment its centre time falls in (the last one takes the remainder)."""
    count = max(1, math.ceil(params.clip_seconds / segment_seconds - 1e-9))
    times = np.arange(params.frames) * params.hop_length / params.sample_rate
    index = np.minimum((times // segment_seconds).astype(int), count - 1)
    return [(int(np.argmax(index == s)), int(len(index) - np.argmax(index[::-1] == s))) for s in range(count)
            if np.any(index == s)]


def explains(bundle: ModelBundle, settings: ScoreSettings) -> bool:
    return settings.explain and bundle.target in EXPLAINED_TARGETS and "mel" in bundle.inputs


def score_rows(bundle: ModelBundle, model_name: str, model_version: str, track_ids: Sequence[str],
               mel: Sequence[bytes], summary: Sequence[Sequence[float] | None], settings: ScoreSettings,
               scored_at: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One ``scores`` row per track for one model (model outputs batched, see ``predict_occluded``)."""
    scored_at = scored_at or dt.datetime.now(dt.timezone.utc)
    segments = segment_bounds(mel_params(bundle.audio), settings.segment_seconds) if explains(bundle, settings) \
        else []
    outputs = bundle.predict_occluded(mel, summary, segments)
    base = outputs[:, 0, :]
    rows = []
    for i, track_id in enumerate(track_ids):
        row: dict[str, Any] = {"track_id": track_id, "model_name": model_name, "model_version": model_version,
                               "prob_popular": None, "popularity_pred": None, "percentile": None,
                               "similar_artists": None, "region": None, "segment_importance": None,
                               "scored_at": scored_at}
        if bundle.target in EXPLAINED_TARGETS:
            value = float(base[i, 0])
            row[OUTPUT_COLUMN[bundle.target]] = value
            row["percentile"] = float(bundle.percentile(np.array([value]))[0]) if bundle.reference else None
            if segments:
                row["segment_importance"] = (base[i, 0] - outputs[i, 1:, 0]).astype(np.float32).tolist()
        elif bundle.target == "artist":
            order = np.argsort(-base[i], kind="stable")[: settings.top_k_artists]
            row["similar_artists"] = [{"artist": bundle.label_names[j], "prob": float(base[i, j])} for j in order]
        elif bundle.target == "region":
            row["region"] = bundle.label_names[int(np.argmax(base[i]))]
        rows.append(row)
    return rows
