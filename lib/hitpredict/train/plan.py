"""What one training process needs, as plain data: picklable, no TensorFlow imported."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hitpredict.models import ModelSpec


@dataclass(frozen=True)
class Normalisation:
    """Per-band mel and per-dimension summary, embedding and tag statistics of the training split.

    ``mel_mean``, ``mel_std``: one value per mel band (n_mels), dB; ``summary_mean``, ``summary_std``:
    one value per summary dimension (summary_size); ``embedding_mean``, ``embedding_std`` and ``tags_mean``,
    ``tags_std``: one value per dimension of the pretrained model's embedding and tag probabilities, empty
    when the dataset has none (datasets and bundles from before embeddings have none).
    """

    mel_mean: list[float]
    mel_std: list[float]
    summary_mean: list[float]
    summary_std: list[float]
    embedding_mean: list[float] = field(default_factory=list)
    embedding_std: list[float] = field(default_factory=list)
    tags_mean: list[float] = field(default_factory=list)
    tags_std: list[float] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Normalisation":
        """The statistics a ``datasets`` row holds (its columns of the same names; an embedding or tags
        column that is absent or null, as in rows written before embeddings, gives an empty list)."""
        def values(key: str) -> list[float]:
            return list(map(float, record.get(key) or []))

        return cls(*(values(k) for k in ("mel_mean", "mel_std", "summary_mean", "summary_std", "embedding_mean",
                                         "embedding_std", "tags_mean", "tags_std")))

    def vector_stats(self, name: str) -> tuple[list[float], list[float]]:
        """(mean, std) of the vector input ``name`` (``embedding`` or ``tags``); empty lists when absent."""
        if name == "embedding":
            return self.embedding_mean, self.embedding_std
        if name == "tags":
            return self.tags_mean, self.tags_std
        raise KeyError(f"no statistics for input {name!r}; vector inputs: embedding, tags")


@dataclass(frozen=True)
class Augmentation:
    """Training-only changes to each batch of spectrograms (see :func:`hitpredict.train.inputs.augment_mel`).

    crop_frames: a random window of this many frames (None: the whole clip).
    gain_db: a random gain in [-gain_db, gain_db] dB per clip (0: none).
    time_masks: this many time masks per clip, each up to ``time_mask_frames`` frames wide.
    """

    crop_frames: int | None = None
    gain_db: float = 0.0
    time_masks: int = 0
    time_mask_frames: int = 20


@dataclass(frozen=True)
class TrainPlan:
    """One training run, as every Horovod process sees it."""

    family: str
    spec: ModelSpec
    norm: Normalisation
    augment: Augmentation
    inputs: tuple[str, ...]          # model input names: "mel", "summary", "embedding" and/or "tags"
    train_rows: int
    validation_rows: int
    batch_size: int
    epochs: int
    learning_rate: float             # of one process; scaled by the number of processes
    warmup_epochs: int
    patience: int
    seed: int
    reader_workers: int = 1
    checkpoint_dir: str | None = None
    threads_per_process: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def steps_per_epoch(self, size: int) -> int:
        """Batches per process per epoch so that the processes together see the split once."""
        return max(1, math.ceil(self.train_rows / (self.batch_size * size)))

    def as_params(self) -> dict[str, Any]:
        """Flat parameters for experiment tracking."""
        params = {"family": self.family, "task": self.spec.task, "inputs": ",".join(self.inputs),
                  "n_mels": self.spec.n_mels,
                  "frames": self.spec.frames, "n_classes": self.spec.n_classes, "train_rows": self.train_rows,
                  "validation_rows": self.validation_rows, "batch_size": self.batch_size, "epochs": self.epochs,
                  "learning_rate": self.learning_rate, "warmup_epochs": self.warmup_epochs,
                  "patience": self.patience, "seed": self.seed}
        params.update({f"augment_{k}": v for k, v in asdict(self.augment).items()})
        return params
