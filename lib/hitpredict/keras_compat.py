"""Keras 2 (tf-keras) for Horovod under TensorFlow 2.16.

TensorFlow 2.16 ships Keras 3, but Horovod 0.28.1's Keras glue needs Keras 2:

1. ``TF_USE_LEGACY_KERAS=1`` makes ``tf.keras`` the tf-keras package (Keras 2). It
   must be set before TensorFlow is first imported, in every process that builds a
   model: drivers and Horovod workers alike.
2. ``horovod.tensorflow.keras`` still does ``from keras import backend``, which fails
   under Keras 3; aliasing ``sys.modules["keras"]`` to ``tf_keras`` before importing
   it makes that import find Keras 2.

Import Keras and Horovod's Keras API only through this module.
"""
from __future__ import annotations

import os
import sys
from types import ModuleType


def use_legacy_keras() -> None:
    """Select Keras 2 for this process and the processes it starts."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:   # no CUDA-plugin noise on CPU machines
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        if not tf.keras.__name__.startswith("tf_keras"):
            raise RuntimeError(
                "TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set, so tf.keras is Keras 3; "
                "import hitpredict.keras_compat (or set TF_USE_LEGACY_KERAS=1) before tensorflow"
            )


def keras() -> ModuleType:
    """The Keras 2 API (``tf_keras``)."""
    use_legacy_keras()
    import tf_keras

    return tf_keras


def horovod_keras() -> ModuleType:
    """``horovod.tensorflow.keras``, importable under TensorFlow 2.16."""
    tf_keras = keras()
    sys.modules["keras"] = tf_keras  # Horovod's `from keras import backend` must get Keras 2
    import horovod.tensorflow.keras as hvd

    return hvd
