"""Keras 2 (tf-keras) for Horovod under TensorFlow 2.16.

TensorFlow 2.16 ships Keras 3, but Horovod 0.28.1's Keras glue needs Keras 2:

1. ``TF_USE_LEGACY_KERAS=1`` makes ``tf.keras`` the tf-keras package (Keras 2). It
   must be set before TensorFlow is first imported, in every process that builds a
   model: drivers and Horovod workers alike.
2. ``horovod.tensorflow.keras`` still does ``from keras import backend``, which fails
   under Keras 3; aliasing ``sys.modules["keras"]`` to ``tf_keras`` before importing
   it makes that import find Keras 2.

Import Keras and Horovod's Keras API only through this module: it is the one Keras-2 set-up.
Every process that may touch TensorFlow calls :func:`ensure_keras2` (or :func:`keras` /
:func:`horovod_keras`, which call it) before importing it: the CLI's ``job_main`` and
``score`` command, the training and scoring workers, the stack check. A process that another
one starts gets :data:`KERAS2_ENVIRONMENT` in its environment. No other module sets
``TF_USE_LEGACY_KERAS`` itself, or uses ``tf_keras`` or ``horovod.tensorflow.keras`` but through
this module (the stack check only imports them by name to read their versions).
"""
from __future__ import annotations

import os
import sys
from types import ModuleType

#: The environment that selects Keras 2: what :func:`ensure_keras2` sets in this process, and what every
#: process a run starts (a Horovod worker) gets before it imports TensorFlow.
KERAS2_ENVIRONMENT: dict[str, str] = {"TF_USE_LEGACY_KERAS": "1"}


def ensure_keras2() -> None:
    """Select Keras 2 for this process and the processes it starts.

    Sets ``TF_USE_LEGACY_KERAS=1`` (and quiets TensorFlow's CUDA-plugin lines on CPU machines). Call it
    before TensorFlow is first imported; raises ``RuntimeError`` if TensorFlow is already loaded with Keras 3.
    """
    os.environ.update(KERAS2_ENVIRONMENT)
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
    """The Keras 2 API: the ``tf_keras`` module (after :func:`ensure_keras2`)."""
    ensure_keras2()
    import tf_keras

    return tf_keras


def horovod_keras() -> ModuleType:
    """The ``horovod.tensorflow.keras`` module, imported with Keras 2 standing in for ``keras`` (see the
    module doc, trap 2)."""
    tf_keras = keras()
    sys.modules["keras"] = tf_keras  # Horovod's `from keras import backend` must get Keras 2
    import horovod.tensorflow.keras as hvd

    return hvd
