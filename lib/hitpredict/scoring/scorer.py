"""Scores of tracks from their stored feature columns: the same code for the Spark job
and for one file, so both give the same numbers.

Each model fills the columns of its target (:data:`hitpredict.targets.TARGETS`): a ``popular`` model ``prob_popular``, a
``popularity`` model ``popularity_pred``, both with their ``percentile`` in the model's
reference distribution and a ``segment_importance`` per segment of the window; an
``artist`` model ``similar_artists`` (top k); a ``region`` model ``region``.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from hitpredict.audio_params import AudioParams
from hitpredict.config import Config
from hitpredict.errors import HitpredictError
from hitpredict.targets import TARGETS
from hitpredict.train.bundle import ModelBundle


class ScoreError(HitpredictError, ValueError):
    """Scoring cannot start (nothing to score, a model that does not fit the data); one line."""


@dataclass(frozen=True)
class ScoreSettings:
    """How scores are made, whatever the model: the same for the Spark job and for one file.

    top_k_artists: similar artists an artist model reports per track.
    explain: whether explained targets get a segment importance per segment (occlusion).
    segment_seconds: length of one occluded segment, seconds.
    """

    top_k_artists: int = 5
    explain: bool = True
    segment_seconds: float = 3.0

    @classmethod
    def from_config(cls, config: Config) -> "ScoreSettings":
        """The settings of the config's ``score`` section."""
        s = config.score
        return cls(top_k_artists=s.top_k_artists, explain=s.explain, segment_seconds=s.segment_seconds)


def segment_bounds(params: AudioParams, segment_seconds: float) -> list[tuple[int, int]]:
    """Frame ranges [begin, end) of consecutive ``segment_seconds`` segments of the window; a
    frame belongs to the segment its centre time falls in (the last one takes the remainder).
    Returns one (begin, end) pair per segment, frames of a ``params.frames``-frame spectrogram."""
    count = max(1, math.ceil(params.clip_seconds / segment_seconds - 1e-9))
    times = np.arange(params.frames) * params.hop_length / params.sample_rate
    index = np.minimum((times // segment_seconds).astype(int), count - 1)
    return [(int(np.argmax(index == s)), int(len(index) - np.argmax(index[::-1] == s))) for s in range(count)
            if np.any(index == s)]


#: The model-dependent columns of a ``scores`` row, empty until the model's target fills its own.
EMPTY_OUTPUTS: dict[str, None] = {**{t.output_column: None for t in TARGETS.values()},
                                  "percentile": None, "segment_importance": None}


def explains(bundle: ModelBundle, settings: ScoreSettings) -> bool:
    """Whether ``bundle``'s scores get a segment importance: explanations on, an explained target
    (:data:`~hitpredict.targets.TARGETS`) and a model that reads the spectrogram."""
    target = TARGETS.get(bundle.target)
    return settings.explain and target is not None and target.explained and "mel" in bundle.inputs


def score_rows(bundle: ModelBundle, model_name: str, model_version: str, track_ids: Sequence[str],
               mel: Sequence[bytes], summary: Sequence[Sequence[float] | None], settings: ScoreSettings,
               scored_at: dt.datetime | None = None,
               vectors: Mapping[str, Sequence[Sequence[float] | None]] | None = None) -> list[dict[str, Any]]:
    """One ``scores`` row per track for one model (model outputs batched, see ``predict_occluded``).

    ``mel``: float16 bytes of each track's log-mel (``bundle.mel_shape``); ``summary``: its summary
    vector (or ``None`` for models that do not read it); ``vectors``: each track's ``embedding`` and
    ``tags`` (the ``features`` columns) for models that read them. The model's target
    (:data:`~hitpredict.targets.TARGETS`) says which column it fills: a probability or a number with its
    ``percentile`` (0-100) and, when explained, ``segment_importance`` (score minus the score with that
    segment occluded, one float per segment); the top ``top_k_artists`` classes with their
    probabilities (``similar_artists``); or the most probable class (``region``).
    """
    scored_at = scored_at or dt.datetime.now(dt.timezone.utc)
    target = TARGETS.get(bundle.target)
    segments = segment_bounds(AudioParams.from_dict(bundle.audio), settings.segment_seconds) \
        if explains(bundle, settings) else []
    outputs = bundle.predict_occluded(mel, summary, segments, vectors=vectors)
    base = outputs[:, 0, :]
    class_names = bundle.label_names or []   # a multiclass bundle carries its class names
    rows = []
    for i, track_id in enumerate(track_ids):
        row: dict[str, Any] = {"track_id": track_id, "model_name": model_name, "model_version": model_version,
                               **EMPTY_OUTPUTS, "scored_at": scored_at}
        rows.append(row)
        if target is None:   # a target this version does not know: its columns stay empty
            continue
        if target.task != "multiclass":   # one number: a probability or a value
            value = float(base[i, 0])
            row[target.output_column] = value
            row["percentile"] = float(bundle.percentile(np.array([value]))[0]) if bundle.reference else None
            if segments:
                row["segment_importance"] = (base[i, 0] - outputs[i, 1:, 0]).astype(np.float32).tolist()
        elif target.ranked:   # the top k classes, with their probabilities
            order = np.argsort(-base[i], kind="stable")[: settings.top_k_artists]
            row[target.output_column] = [{"artist": class_names[j], "prob": float(base[i, j])}
                                         for j in order]
        else:   # the most probable class
            row[target.output_column] = class_names[int(np.argmax(base[i]))]
    return rows
