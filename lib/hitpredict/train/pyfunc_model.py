"""The MLflow pyfunc face of a model bundle ("models from code": MLflow loads this file).

``mlflow.pyfunc.load_model(uri).predict(df)`` takes a DataFrame with, per row, one of:

- ``audio``: an audio file's bytes (MP3, M4A, WAV, ...; base64 text is accepted too, which is how the
  scoring server's JSON carries a binary column);
- ``path``: the path of an audio file the predicting process can read (not in a model server, where it
  would let any caller make the server open its files);
- ``mel`` (float16 bytes) and ``summary``: the stored columns of the ``features`` table.

Audio is decoded and featurised exactly as ``hitpredict score FILE`` does (``clip_features.features_row``,
one thread) with the audio parameters and ``min_seconds`` stored in the bundle, so the numbers equal
that command's. It returns one column per output (see :meth:`HitpredictModel.predict`).
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from hitpredict.audio_params import AudioParams
from hitpredict.clip_features import features_row
from hitpredict.embeddings import Embedder
from hitpredict.keras_compat import ensure_keras2
from hitpredict.models import VECTOR_INPUTS
from hitpredict.targets import target_named
from hitpredict.train.bundle import BundleError, ModelBundle

#: The input columns, in the order a row's first non-empty one is used.
INPUT_COLUMNS = ("audio", "path", "mel")
#: What MLflow's scoring server (``mlflow models serve``, Databricks Model Serving) sets in its process.
SERVING_VARIABLE = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"
#: The shortest audio accepted (seconds) when a bundle does not record it: the ``audio`` config default.
DEFAULT_MIN_SECONDS = 5.0


def _empty(value: Any) -> bool:
    """Whether a cell holds nothing (None, NaN, empty bytes or text)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    return isinstance(value, (bytes, str)) and len(value) == 0


def _audio_bytes(value: Any, row: str) -> bytes:
    """An ``audio`` cell as bytes: bytes as they are, text as base64; ``BundleError`` naming the row otherwise."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BundleError(f"{row}: the audio column holds text that is not base64") from None
    raise BundleError(f"{row}: the audio column holds {type(value).__name__}, not bytes or base64 text")


def model_features(bundle: ModelBundle, model_input: pd.DataFrame) -> tuple[list[bytes], list[Any], dict[str, list]]:
    """The ``mel`` (float16 bytes), ``summary`` and per-clip vector (``embedding``, ``tags``) inputs of
    ``bundle`` for each row of ``model_input`` (see the module docstring): audio is embedded with the
    bundle's own embedding model; a ``mel`` row brings its vectors in columns of the same names.
    ``BundleError`` (one line naming the row) for a row with no input, an unreadable path, audio that
    cannot be decoded or embedded, or a ``mel`` row without the vectors the model reads."""
    from threadpoolctl import threadpool_limits

    columns = [c for c in INPUT_COLUMNS if c in model_input.columns]
    if not columns:
        raise BundleError(f"no input column: give one of {', '.join(INPUT_COLUMNS)} (with summary) per row; "
                          f"got columns {', '.join(map(str, model_input.columns)) or 'none'}")
    params = AudioParams.from_dict(bundle.audio)
    min_seconds = float(bundle.audio.get("min_seconds", DEFAULT_MIN_SECONDS))
    with_summary = "summary" in bundle.inputs
    reads = [name for name in VECTOR_INPUTS if name in bundle.inputs]
    embedding = bundle.embedder_name()
    mel: list[bytes] = []
    summary: list[Any] = []
    vectors: dict[str, list] = {name: [] for name in VECTOR_INPUTS}
    for position, (_, row) in enumerate(model_input.iterrows()):
        where = f"row {position}"
        column = next((c for c in columns if not _empty(row[c])), None)
        if column is None:
            raise BundleError(f"{where}: empty; give one of {', '.join(INPUT_COLUMNS)}")
        if column == "mel":
            missing = [name for name in reads if name not in model_input.columns or _empty(row[name])]
            if missing:
                raise BundleError(f"{where}: this {bundle.family} model also reads {', '.join(missing)}: give "
                                  f"{'them' if len(missing) > 1 else 'it'} beside mel, or send the audio")
            mel.append(row["mel"])
            summary.append(row["summary"] if "summary" in model_input.columns else None)
            for name in VECTOR_INPUTS:
                vectors[name].append(list(row[name]) if name in reads else None)
            continue
        if column == "path":
            if os.environ.get(SERVING_VARIABLE, "").lower() == "true":
                raise BundleError(f"{where}: a model server does not read paths (that would open its own files "
                                  f"for any caller); send the file's bytes in the audio column, base64 in JSON")
            name = str(row["path"])
            where = f"{where} ({name})"
            try:
                audio = Path(name).expanduser().read_bytes()
            except OSError as exc:
                raise BundleError(f"{where}: cannot read: {exc.strerror}") from None
        else:
            name, audio = f"row-{position}", _audio_bytes(row["audio"], where)
        with threadpool_limits(1):   # as extract_features and score FILE: the same bytes give the same bits
            features = features_row(name, None, audio, params, min_seconds, with_summary,
                                    embedder=_embedder(embedding) if embedding else None)
        if features["status"] != "ok":
            raise BundleError(f"{where}: cannot score: {features['error_kind']}: {features['error_detail']}")
        if embedding and features["embedding"] is None:
            raise BundleError(f"{where}: cannot score: {features['error_detail']}")
        mel.append(features["mel"])
        summary.append(features["summary"])
        for name in VECTOR_INPUTS:
            vectors[name].append(features[name])
    return mel, summary, vectors


def _embedder(name: str) -> Embedder:
    """The shared embedder ``name`` (a bundle's ``embedding_model``); ``BundleError`` when it cannot be
    built here (musicnn is not installed where the model is served: ``pip install --no-deps musicnn==0.1.0``)."""
    try:
        return Embedder.named(name)
    except (ImportError, RuntimeError, ValueError) as exc:
        raise BundleError(f"cannot embed audio with {name}: {type(exc).__name__}: {exc}") from None


class HitpredictModel(PythonModel):
    """A :class:`~hitpredict.train.bundle.ModelBundle` as an MLflow pyfunc model."""

    def load_context(self, context: Any) -> None:
        """Load the bundle folder MLflow stored as the ``bundle`` artifact (Keras 2 selected first, so a
        user's own process needs no hitpredict environment variable)."""
        ensure_keras2()
        self.folder = context.artifacts["bundle"]
        self.bundle = ModelBundle.load(self.folder)
        name = self.bundle.embedder_name()
        if name:   # musicnn's graph invalidates Keras models built before it: embedder first, then the model
            _embedder(name)
            self._current()

    def _current(self) -> ModelBundle:
        """The bundle, loaded again when a musicnn embedder was built in this process since it was loaded
        (another model's, or ``score FILE``'s): the embedder's graph leaves Keras models built before it
        unusable."""
        if self.bundle.outdated:
            self.bundle = ModelBundle.load(self.folder)
        return self.bundle

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """``model_input`` (n rows, each with ``audio``, ``path`` or ``mel`` + ``summary``) -> the model's
        outputs, n rows, same index: the target's score column (``prob_popular`` 0-1, ``popularity_pred``), or
        one probability column per class name for a multiclass target. A row that cannot be scored raises an
        ``MlflowException`` (invalid parameter value: the scoring server answers 400) naming the row."""
        from mlflow.exceptions import MlflowException

        try:
            mel, summary, vectors = model_features(self.bundle, model_input)
        except BundleError as exc:
            raise MlflowException.invalid_parameter_value(f"hitpredict: {exc}") from None
        out = self._current().predict(mel, summary, vectors=vectors)
        names = self.bundle.label_names if self.bundle.spec.task == "multiclass" else [
            target_named(self.bundle.target).output_column]
        return pd.DataFrame(out, columns=names, index=model_input.index)


set_model(HitpredictModel())
