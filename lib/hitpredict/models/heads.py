"""What a model predicts (its head) and the shapes it reads: shared by every family."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hitpredict.keras_compat import keras
from hitpredict.targets import Task


@dataclass(frozen=True)
class ModelSpec:
    """Inputs and output of a model.

    Attributes
    ----------
    task : binary (one sigmoid), regression (one linear unit) or multiclass (softmax).
    n_mels, frames : spectrogram input shape.
    summary_size : length of the summary vector.
    n_classes : classes of a multiclass head.
    seed : initialiser seed, so the same spec trains the same way.
    window_frames, window_hop : a spectrogram model trained on crops of ``window_frames`` frames predicts a
        longer clip from windows of that length, ``window_hop`` frames apart (see
        :mod:`hitpredict.models.windows`); None: the whole input at once.
    embedding_size : length of the pretrained music embedding (the ``embed`` family's input; 0: none).
    tags_size : how many tag probabilities the ``fusion`` family's tag branch reads (0: none).
    fusion_branches : the branches a ``fusion`` model has, among ``mel`` and ``tags`` (at least one).
    embed_units : the ``embed`` family's hidden ReLU layers, one width each; empty: a linear head on the inputs.
    embed_dropout : dropout (0-1) after each of those hidden layers.
    embed_input_dropout : dropout (0-1) on the ``embed`` family's concatenated inputs.
    embed_l2 : L2 penalty on the ``embed`` family's kernels, hidden layers and head (0: none).
    """

    task: Task
    n_mels: int = 128
    frames: int = 1292
    summary_size: int = 62
    n_classes: int = 2
    seed: int = 13
    window_frames: int | None = None
    window_hop: int | None = None
    embedding_size: int = 0
    tags_size: int = 0
    fusion_branches: tuple[str, ...] = ("mel", "tags")
    embed_units: tuple[int, ...] = (128, 64)
    embed_dropout: float = 0.3
    embed_input_dropout: float = 0.0
    embed_l2: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fusion_branches", tuple(self.fusion_branches))   # a list when read from JSON
        object.__setattr__(self, "embed_units", tuple(int(n) for n in self.embed_units))
        if any(n < 1 for n in self.embed_units):
            raise ValueError(f"embed_units must be positive widths, got {list(self.embed_units)}")
        for name in ("embed_dropout", "embed_input_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.embed_l2 < 0:
            raise ValueError(f"embed_l2 must be at least 0, got {self.embed_l2}")
        if not self.fusion_branches or set(self.fusion_branches) - {"mel", "tags"}:
            raise ValueError(f"fusion_branches must be one or both of mel, tags, got {list(self.fusion_branches)}")
        if self.task == "multiclass" and self.n_classes < 2:
            raise ValueError(f"a multiclass head needs at least 2 classes, got {self.n_classes}")
        if (self.window_frames is None) != (self.window_hop is None) or (
                self.window_frames is not None and not 0 < (self.window_hop or 0) <= self.window_frames):
            raise ValueError(f"window_hop must be in 1..window_frames, got window_frames={self.window_frames}, "
                             f"window_hop={self.window_hop}")


def mel_input() -> Any:
    """The ``mel`` input: a normalised log-mel spectrogram, shape (batch, n_mels, frames, 1), any
    n_mels and frames (the convolutional families pool over both)."""
    return keras().Input(shape=(None, None, 1), name="mel")


def summary_input(spec: ModelSpec) -> Any:
    """The ``summary`` input: the normalised summary vector, shape (batch, ``spec.summary_size``)."""
    return keras().Input(shape=(spec.summary_size,), name="summary")


def embedding_input(spec: ModelSpec) -> Any:
    """The ``embedding`` input: the clip's pretrained music embedding, normalised, shape
    (batch, ``spec.embedding_size``)."""
    return keras().Input(shape=(spec.embedding_size,), name="embedding")


def tags_input(spec: ModelSpec) -> Any:
    """The ``tags`` input: the clip's tag probabilities, normalised, shape (batch, ``spec.tags_size``)."""
    return keras().Input(shape=(spec.tags_size,), name="tags")


#: Each task's output layer: (Keras activation, layer name).
_OUTPUT = {"binary": ("sigmoid", "prob"), "regression": ("linear", "value"), "multiclass": ("softmax", "probs")}


def head_width(spec: ModelSpec) -> int:
    """Output units of ``spec.task``'s head: ``spec.n_classes`` for multiclass, else 1."""
    return spec.n_classes if spec.task == "multiclass" else 1


def head_activation(spec: ModelSpec) -> tuple[str, str]:
    """(Keras activation, layer name) of ``spec.task``'s head: sigmoid ``prob`` (binary), linear ``value``
    (regression) or softmax ``probs`` (multiclass)."""
    return _OUTPUT[spec.task]


def head_logits(spec: ModelSpec, features: Any, name: str, seed: int) -> Any:
    """The units of ``spec.task``'s head before its activation, on top of ``features`` (batch, width): a Dense
    layer ``name`` of :func:`head_width` units, Glorot-uniform initialised with ``seed``; (batch, head width)."""
    return _dense(spec, features, None, name, seed)


def head(spec: ModelSpec, features: Any, kernel_l2: float = 0.0) -> Any:
    """The output layer for ``spec.task`` on top of ``features`` (batch, width): one sigmoid unit
    (binary, probability 0-1), one linear unit (regression) or ``spec.n_classes`` softmax units
    (multiclass); output shape (batch, 1) or (batch, n_classes). One Dense layer (:func:`head_activation`
    names it), Glorot-uniform initialised with ``spec.seed``, with an L2 penalty ``kernel_l2`` on its kernel
    (0: none)."""
    activation, name = head_activation(spec)
    return _dense(spec, features, activation, name, spec.seed, kernel_l2)


def _dense(spec: ModelSpec, features: Any, activation: str | None, name: str, seed: int,
           kernel_l2: float = 0.0) -> Any:
    """A Dense layer of the head's width on ``features``, Glorot-uniform initialised with ``seed``."""
    k = keras()
    return k.layers.Dense(head_width(spec), activation=activation,
                          kernel_initializer=k.initializers.GlorotUniform(seed=seed),
                          kernel_regularizer=k.regularizers.L2(kernel_l2) if kernel_l2 else None,
                          name=name)(features)


def loss_and_metrics(spec: ModelSpec) -> tuple[str, list[Any]]:
    """The loss to compile with (a Keras name) and the metrics to watch (Keras metric objects) for
    ``spec.task``: binary cross-entropy with AUC and accuracy, MSE with MAE, or sparse categorical
    cross-entropy with accuracy."""
    k = keras()
    if spec.task == "binary":
        return "binary_crossentropy", [k.metrics.AUC(name="auc"), k.metrics.BinaryAccuracy(name="accuracy")]
    if spec.task == "regression":
        return "mse", [k.metrics.MeanAbsoluteError(name="mae")]
    return "sparse_categorical_crossentropy", [k.metrics.SparseCategoricalAccuracy(name="accuracy")]
