"""``fusion``: the Mando-pop study's model. The inception spectrogram branch and a dense branch on the
clip's tag probabilities (musicnn's 50 tags, computed once by ``extract_features``) each make their own
prediction; the two are combined by a learned weight.

Each branch ends in its own head's logits (``mel_logits``, ``tags_logits``: (batch, width), before the
sigmoid or softmax; the value itself for regression). A :func:`fusion_weight_layer` mixes them,
``w * mel + (1 - w) * tags`` with ``w = sigmoid(g)`` and ``g`` one trainable scalar (0 at the start:
an even mix), and the head's activation gives the prediction. With one branch (``spec.fusion_branches``)
there is nothing to mix: that branch's logits go straight to the activation.

The model is a function of one (mel window, tags) pair, so a whole-clip prediction from windows
(:mod:`hitpredict.models.windows`) repeats the clip's tags for every window.
"""
from __future__ import annotations

import functools
from typing import Any

from hitpredict.keras_compat import keras
from hitpredict.models.heads import ModelSpec, head_activation, head_logits, tags_input
from hitpredict.models.inception import inception_branch, inception_input

#: The name of the layer that holds the learned weight (its one variable is ``g``, the weight ``sigmoid(g)``).
WEIGHT_LAYER = "fusion_weight"


def build_fusion(spec: ModelSpec, tag_units: int = 32, dropout: float = 0.2) -> Any:
    """The fusion model of ``spec.fusion_branches`` (``mel``, ``tags`` or both).

    Inputs, as the branches need them: ``mel`` (batch, ``spec.n_mels``, frames, 1), any frames, and ``tags``
    (batch, ``spec.tags_size``), normalised. The mel branch is :func:`~hitpredict.models.inception.inception_branch`
    then the head's logits (:func:`~hitpredict.models.heads.head_logits`); the tags branch one ReLU layer of
    ``tag_units`` (then ``dropout``) and the head's logits. The mix goes through the head's activation, in a
    layer named as the head's (:func:`~hitpredict.models.heads.head_activation`). Output (batch, 1) or
    (batch, n_classes). An uncompiled Keras 2 model named ``fusion``.
    ``ValueError`` when the tags branch is on and ``spec.tags_size`` is 0 (the dataset has no tags).
    """
    k = keras()
    inputs, logits = [], []
    if "mel" in spec.fusion_branches:
        mel = inception_input(spec)
        features = inception_branch(spec, mel)
        inputs.append(mel)
        logits.append(head_logits(spec, features, "mel_logits", spec.seed))
    if "tags" in spec.fusion_branches:
        if spec.tags_size < 1:
            raise ValueError("the fusion family's tags branch needs tag probabilities: spec.tags_size is 0 (the "
                             "dataset's features have no tags; re-extract with embeddings on, or set "
                             "train.fusion_branches: [mel])")
        tags = tags_input(spec)
        x = k.layers.Dense(tag_units, activation="relu", kernel_initializer=k.initializers.HeNormal(seed=spec.seed + 7),
                           name="tags_dense")(tags)
        x = k.layers.Dropout(dropout, seed=spec.seed + 7, name="tags_dropout")(x)
        inputs.append(tags)
        logits.append(head_logits(spec, x, "tags_logits", spec.seed + 8))
    mixed = fusion_weight_layer()(name=WEIGHT_LAYER)(logits) if len(logits) == 2 else logits[0]
    activation, name = head_activation(spec)
    out = k.layers.Activation(activation, name=name)(mixed)
    return k.Model(inputs if len(inputs) > 1 else inputs[0], out, name="fusion")


def mel_weight(model: Any) -> float:
    """The weight ``sigmoid(g)`` a two-branch fusion ``model`` gives its mel branch (the tags get 1 minus it);
    ``ValueError`` for a model without the weight layer (one branch)."""
    import tensorflow as tf

    try:
        layer = model.get_layer(WEIGHT_LAYER)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no {WEIGHT_LAYER} layer: it is not a two-branch fusion model") \
            from None
    return float(tf.sigmoid(layer.gate))


@functools.lru_cache(maxsize=None)
def fusion_weight_layer() -> Any:
    """The Keras layer class that mixes two branches' logits by a learned weight, defined on first use
    (defining it imports TensorFlow, which ``import hitpredict.models`` must not).

    Called on ``[mel_logits, tags_logits]`` (two tensors of one shape (batch, width)), it returns
    ``sigmoid(g) * mel_logits + (1 - sigmoid(g)) * tags_logits``; ``g`` is its one trainable scalar, 0 at first.
    """
    import tensorflow as tf

    class FusionWeight(keras().layers.Layer):  # type: ignore[misc, name-defined]
        """[a, b] -> sigmoid(g) * a + (1 - sigmoid(g)) * b, ``g`` a trainable scalar (initially 0)."""

        def build(self, input_shape: Any) -> None:
            self.gate = self.add_weight(name="gate", shape=(), initializer="zeros", trainable=True)
            super().build(input_shape)

        def call(self, inputs: Any) -> Any:
            a, b = inputs
            w = tf.sigmoid(self.gate)
            return w * a + (1.0 - w) * b

    return FusionWeight
