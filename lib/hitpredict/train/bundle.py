"""A trained model with everything scoring needs, saved as a folder and reloaded anywhere.

``bundle.json`` holds the family and input spec, the audio parameters the features were
made with, the normalisation statistics, the popular threshold, label names and the
reference distribution of predictions on the training split (for percentiles);
``weights.h5`` holds the weights. Loading rebuilds the model from the same code and
sets the weights, so no pickled Python travels with a model.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hitpredict.models import ModelSpec
from hitpredict.train.plan import Normalisation

log = logging.getLogger(__name__)

BUNDLE_FILE, WEIGHTS_FILE = "bundle.json", "weights.h5"
#: Predictions always run in batches of this size (the last one padded), so a track's
#: score does not depend on which other tracks share its batch.
PREDICT_BATCH = 32


class BundleError(ValueError):
    """A model folder is missing, corrupt or does not fit the data; one line."""


@dataclass
class ModelBundle:
    family: str
    spec: ModelSpec
    target: str
    audio: dict[str, Any]
    norm: Normalisation
    inputs: tuple[str, ...]
    dataset_id: str
    threshold: float | None = None
    label_names: list[str] | None = None
    reference: list[float] = field(default_factory=list)   # quantiles of training-split predictions
    metrics: dict[str, Any] = field(default_factory=dict)
    model: Any = field(default=None, repr=False, compare=False)

    # ----------------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        # not asdict(self): that would deep-copy the Keras model too
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        data.update(spec=asdict(self.spec), norm=asdict(self.norm), inputs=list(self.inputs))
        return data

    def save(self, directory: str | os.PathLike[str]) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_weights(str(directory / WEIGHTS_FILE))
        (directory / BUNDLE_FILE).write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "ModelBundle":
        """Load a bundle folder; ``BundleError`` says what is missing or broken."""
        directory = Path(directory)
        meta_path, weights_path = directory / BUNDLE_FILE, directory / WEIGHTS_FILE
        for path in (meta_path, weights_path):
            if not path.is_file():
                raise BundleError(f"not a hitpredict model folder: {path} is missing")
        try:
            data = json.loads(meta_path.read_text())
            bundle = cls(
                family=data["family"], spec=ModelSpec(**data["spec"]), target=data["target"], audio=data["audio"],
                norm=Normalisation(**data["norm"]), inputs=tuple(data["inputs"]), dataset_id=data["dataset_id"],
                threshold=data.get("threshold"), label_names=data.get("label_names"),
                reference=data.get("reference") or [], metrics=data.get("metrics") or {},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"corrupt model description {meta_path}: {type(exc).__name__}: {exc}") from None
        from hitpredict.models import build_model

        bundle.model = build_model(bundle.family, bundle.spec)
        try:
            bundle.model.load_weights(str(weights_path))
        except Exception as exc:  # noqa: BLE001 - h5py/Keras raise many types for a bad file
            raise BundleError(f"corrupt model weights {weights_path}: {type(exc).__name__}: {exc}") from None
        return bundle

    # ----------------------------------------------------------------- prediction
    @property
    def mel_shape(self) -> tuple[int, int]:
        return self.spec.n_mels, self.spec.frames

    def predict(self, mel: Sequence[bytes], summary: Sequence[Sequence[float] | None]) -> np.ndarray:
        """Model outputs for stored feature columns: (n, 1) for binary/regression, (n, classes) for multiclass."""
        return self.predict_occluded(mel, summary, ())[:, 0, :]

    def predict_occluded(self, mel: Sequence[bytes], summary: Sequence[Sequence[float] | None],
                         segments: Sequence[tuple[int, int]]) -> np.ndarray:
        """Outputs for each track as stored (variant 0) and with each of ``segments`` (frame ranges)
        of its normalised spectrogram set to the training mean (variants 1..S): (n, 1 + S, width).

        All variants stream through the model in batches of exactly ``PREDICT_BATCH`` rows (the
        last one padded), so a track's numbers do not depend on which tracks share its batches.
        """
        from hitpredict.train.inputs import model_inputs

        n, variants = len(mel), 1 + len(segments)
        width = self.spec.n_classes if self.spec.task == "multiclass" else 1
        out = np.zeros((n, variants, width), dtype=np.float32)
        if segments and "mel" not in self.inputs:
            raise BundleError(f"a {self.family} model does not read the spectrogram: nothing to occlude")
        zeros = [0.0] * self.spec.summary_size
        for first in range(0, n, PREDICT_BATCH):   # normalise PREDICT_BATCH tracks at a time
            tracks = slice(first, min(first + PREDICT_BATCH, n))
            mel_raw = np.array(list(mel[tracks]), dtype=object)
            summaries = np.array([list(s) if s is not None else zeros for s in summary[tracks]], dtype=np.float32)
            feed = {k: v.numpy() for k, v in model_inputs(mel_raw, summaries, self.inputs, self.spec.n_mels,
                                                          self.spec.frames, self.norm).items()}
            rows = (tracks.stop - tracks.start) * variants
            flat = out[tracks].reshape(rows, width)
            for start in range(0, rows, PREDICT_BATCH):
                index = np.arange(start, min(start + PREDICT_BATCH, rows))
                track, variant = index // variants, index % variants
                batch = {}
                for name, values in feed.items():
                    part = values[track]
                    if name == "mel":
                        for row, v in enumerate(variant):
                            if v:
                                begin, end = segments[v - 1]
                                part[row, :, begin:end] = 0.0   # the training mean, after normalisation
                    batch[name] = np.concatenate([part, np.zeros((PREDICT_BATCH - len(index), *part.shape[1:]),
                                                                 dtype=part.dtype)])
                flat[index] = self.model(batch, training=False).numpy()[: len(index)]
            out[tracks] = flat.reshape(tracks.stop - tracks.start, variants, width)
        return out

    def percentile(self, values: np.ndarray) -> np.ndarray:
        """Where each value falls in the reference distribution (0-100)."""
        if not self.reference:
            return np.full(len(values), np.nan)
        ref = np.asarray(self.reference, dtype=float)
        return np.interp(np.asarray(values, dtype=float), ref, np.linspace(0, 100, len(ref)))


def reference_quantiles(values: np.ndarray, points: int) -> list[float]:
    """``points`` evenly spaced quantiles of ``values`` (the training split's predictions)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return []
    return np.quantile(values, np.linspace(0, 1, points)).tolist()
