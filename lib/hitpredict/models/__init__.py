"""The model zoo: one module per family, each with a binary, regression or multiclass head.

Every builder takes the same :class:`ModelSpec` and returns an uncompiled Keras 2 model
(``tf_keras``, see :mod:`hitpredict.keras_compat`) whose inputs are named ``mel``
(n_mels x frames x 1, normalised), ``summary`` (the summary vector), ``embedding`` (a pretrained music
embedding) and/or ``tags`` (tag probabilities), as :func:`input_names` says.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, get_args

from hitpredict.families import ModelFamily
from hitpredict.keras_compat import keras
from hitpredict.models import baselines, cnn, crnn, embed, fusion, inception, windows
from hitpredict.models.heads import ModelSpec

FAMILIES: tuple[str, ...] = get_args(ModelFamily)


#: Families that read the summary vector only; ``embed`` reads the embedding and the summary vector,
#: ``fusion`` the spectrogram and/or the tags (``spec.fusion_branches``), every other family the spectrogram.
SUMMARY_FAMILIES = ("dummy", "logreg", "mlp")
#: The inputs that are per-clip vectors from ``extract_features``'s pretrained model (``features`` columns
#: of the same names), beside ``mel`` and ``summary``.
VECTOR_INPUTS = ("embedding", "tags")


def input_names(family: str, spec: ModelSpec | None = None) -> tuple[str, ...]:
    """The named inputs a ``family`` model reads: ``mel``, ``summary``, ``embedding`` and/or ``tags``. For
    ``fusion`` they follow ``spec.fusion_branches`` (both branches when ``spec`` is None)."""
    if family in SUMMARY_FAMILIES:
        return ("summary",)
    if family == "embed":
        return ("embedding", "summary")
    if family == "fusion":
        branches = spec.fusion_branches if spec is not None else ("mel", "tags")
        return tuple(name for name in ("mel", "tags") if name in branches)
    return ("mel",)


@dataclass(frozen=True)
class TimeLocalTrunk:
    """Where a spectrogram model stops being local in time: the output of ``layer`` at time
    position p depends only on input frames within ``radius`` frames of [p * stride, (p + 1) * stride).
    Occlusion explanations recompute the trunk only around an occluded segment."""

    layer: str
    stride: int
    radius: int
    axis: int = 2          # the time axis of the layer's output (batch first)


#: Families whose first layers are local in time (3x3 convolutions and 2x2 pooling: each
#: pooled position sees frames 7 before to 14 after its own 8; inception: 9-frame kernels then a
#: 3-frame convolution). tests/test_models.py checks that recomputing around a segment equals a full pass.
TIME_LOCAL_TRUNKS: dict[str, TimeLocalTrunk] = {
    "cnn": TimeLocalTrunk("block2_pool", 8, 16),
    "crnn": TimeLocalTrunk("block2_pool", 8, 16),
    "inception": TimeLocalTrunk("temporal", 1, 8, axis=1),
}


def split_model(model: Any, layer_name: str) -> tuple[Any, Any]:
    """(trunk, head): ``model`` up to ``layer_name``'s output, and the rest of it applied to a
    new input of that shape; both share ``model``'s layers and weights."""
    k = keras()
    cut = model.get_layer(layer_name)
    trunk = k.Model(model.inputs, cut.output, name=f"{model.name}_trunk")
    start = k.Input(shape=tuple(cut.output.shape[1:]), name="trunk")
    tensors = {cut.name: start}
    after = False
    for layer in model.layers:
        if layer is cut:
            after = True
            continue
        if not after:
            continue
        parents = layer._inbound_nodes[0].inbound_layers
        parents = parents if isinstance(parents, (list, tuple)) else [parents]
        args = [tensors[p.name] for p in parents]
        tensors[layer.name] = layer(args if len(args) > 1 else args[0])
    return trunk, k.Model(start, tensors[model.layers[-1].name], name=f"{model.name}_head")


#: family -> its builder: ``builder(spec)`` returns an uncompiled Keras 2 model.
BUILDERS: dict[str, Callable[[ModelSpec], Any]] = {
    "dummy": baselines.build_dummy, "logreg": baselines.build_logreg, "mlp": baselines.build_mlp,
    "cnn": cnn.build_cnn, "crnn": crnn.build_crnn, "inception": inception.build_inception,
    "embed": embed.build_embed, "fusion": fusion.build_fusion,
}


def windowed(family: str, spec: ModelSpec) -> bool:
    """Whether a ``family`` model for ``spec`` predicts a clip from windows (:mod:`hitpredict.models.windows`):
    it reads the spectrogram and ``spec`` gives a window length."""
    return spec.window_frames is not None and "mel" in input_names(family, spec)


def build_model(family: str, spec: ModelSpec) -> Any:
    """Build the ``family`` model for ``spec``: an uncompiled Keras 2 model whose inputs are named as
    :func:`input_names` says (``mel`` (batch, n_mels, frames, 1) or ``summary`` (batch, summary_size)) and
    whose output is (batch, 1) for binary and regression or (batch, n_classes) for multiclass. A spectrogram
    model with a window length in ``spec`` is wrapped by :func:`~hitpredict.models.windows.windowed_model`:
    any clip length in, the mean of its windows' logits out. ``ValueError`` names the known families."""
    if family not in BUILDERS:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    model = BUILDERS[family](spec)
    return windows.windowed_model(model, spec) if windowed(family, spec) else model


__all__ = ["FAMILIES", "ModelFamily", "input_names", "VECTOR_INPUTS", "ModelSpec", "build_model", "windowed",
           "TIME_LOCAL_TRUNKS", "split_model"]
