"""The model families a config may name, without loading the Keras model package.

``config.py`` validates ``train.family`` and ``demo.models`` against :data:`ModelFamily`;
:mod:`hitpredict.models` registers one builder per name. Adding a family: a builder in
``models/``, its entry in ``models/__init__.py`` and its name here (see ARCHITECTURE.md).
"""
from __future__ import annotations

from typing import Literal

#: The model families: ``dummy``, ``logreg`` and ``mlp`` read the summary vector, ``cnn``, ``crnn`` and
#: ``inception`` the log-mel spectrogram, ``embed`` the pretrained music embedding and the summary vector,
#: ``fusion`` the spectrogram and the 50 tag probabilities (see ``models.input_names``).
ModelFamily = Literal["dummy", "logreg", "mlp", "cnn", "crnn", "inception", "embed", "fusion"]
