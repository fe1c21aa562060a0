"""Score one audio file without Spark: for an artist who just wants to try a demo.

The file goes through the same decoding and mel code as extract_features (with each
model's own audio parameters) and the same scorer as score_catalogue, so its numbers
equal the batch job's for the same audio.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from hitpredict.audio_params import AudioParams
from hitpredict.clip_features import features_row
from hitpredict.config import EmbeddingConfig
from hitpredict.embeddings import Embedder
from hitpredict.models import VECTOR_INPUTS
from hitpredict.scoring.registry import ResolvedModel
from hitpredict.scoring.scorer import ScoreError, ScoreSettings, score_rows
from hitpredict.scoring.view import merge_models
from hitpredict.train.bundle import ModelBundle

log = logging.getLogger(__name__)


def _embedder(name: str, path: Path, embedding: EmbeddingConfig | None) -> Embedder:
    """The shared embedder ``name``, with ``embedding``'s threads and clips per run (None: 1 and 1);
    ``ScoreError`` naming the file when it cannot be built here."""
    try:
        if embedding is None:
            return Embedder.named(name)
        return Embedder.named(name, embedding.threads, embedding.batch_clips)
    except (ImportError, RuntimeError, ValueError) as exc:
        raise ScoreError(f"{path}: cannot embed with {name}: {type(exc).__name__}: {exc}") from None


def score_file(path: str | Path, models: list[ResolvedModel], settings: ScoreSettings,
               min_seconds: float = 5.0, embedding: EmbeddingConfig | None = None) -> pd.DataFrame:
    """One track row (see ``view.merge_models``) for the audio file at ``path``, scored by every model
    of ``models``, each on a spectrogram made with its own audio parameters; ``min_seconds``: the
    shortest audio accepted, seconds. A model that reads the pretrained embedding gets it from the embedder
    its bundle names, run with ``embedding``'s ``threads`` and ``batch_clips`` (None: 1 and 1), as
    ``extract_features`` runs it. ``ScoreError`` if the file cannot be read or decoded."""
    from threadpoolctl import threadpool_limits

    path = Path(path)
    try:
        audio = path.read_bytes()
    except OSError as exc:
        raise ScoreError(f"{path}: cannot read: {exc.strerror}") from None
    bundles = [model.bundle or ModelBundle.load(model.bundle_dir) for model in models]
    # Building musicnn's graph (tf.compat.v1 layers) invalidates the Keras models built before it in this
    # process: build the embedders first, then use only bundles loaded since the last embedder build (a
    # resolved model's bundle may be older than an embedder built after it, e.g. in a notebook).
    for name in sorted({name for name in (bundle.embedder_name() for bundle in bundles) if name}):
        _embedder(name, path, embedding)
    bundles = [bundle if not bundle.outdated else ModelBundle.load(model.bundle_dir)
               for model, bundle in zip(models, bundles)]
    # the summary vector costs as much as the spectrogram: make it only for models that read it
    with_summary = any("summary" in bundle.inputs for bundle in bundles)
    features: dict[tuple[AudioParams, str | None], dict] = {}
    rows = []
    for model, bundle in zip(models, bundles):
        params = AudioParams.from_dict(model.audio)
        embedder_name = bundle.embedder_name()
        if (params, embedder_name) not in features:
            with threadpool_limits(1):   # as extract_features: the same bytes give the same bits
                features[params, embedder_name] = features_row(
                    path.name, None, audio, params, min_seconds, with_summary,
                    embedder=_embedder(embedder_name, path, embedding) if embedder_name else None)
        row = features[params, embedder_name]
        if row["status"] != "ok":
            raise ScoreError(f"{path}: cannot score: {row['error_kind']}: {row['error_detail']}")
        if embedder_name and row["embedding"] is None:
            raise ScoreError(f"{path}: cannot score with {model.label}: {row['error_detail']}")
        rows += score_rows(bundle, model.name, model.version, [path.name], [row["mel"]], [row["summary"]], settings,
                           vectors={name: [row[name]] for name in VECTOR_INPUTS})
    return merge_models(pd.DataFrame(rows))
