"""The audio front end's five parameters, in one type, with every conversion beside it.

A spectrogram depends on ``sample_rate``, ``clip_seconds``, ``n_fft``, ``hop_length`` and ``n_mels``.
They are set in the config (:class:`~hitpredict.config.AudioConfig` extends :class:`AudioParams`),
stored as JSON with every ``features`` row (``audio_params``) and as a dict in every model bundle
(``ModelBundle.audio``), and compared before a model scores features. This module declares them
once, with their bounds, and converts between those forms. It is light (pydantic only), so the
config and the scorer can import it without loading numpy or librosa.
"""
from __future__ import annotations

import json
from typing import Any, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AudioParams(BaseModel):
    """The audio front end (ARCHITECTURE.md): frozen and hashable, so features.py caches filter banks by it.

    sample_rate: Hz the audio is resampled to.
    clip_seconds: length of the window taken from the centre of each track, seconds.
    n_fft: FFT size, samples (a power of two).
    hop_length: samples between frames.
    n_mels: mel bands.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    #: The parameters, in the order of their declaration (the order a difference is reported in).
    FIELDS: ClassVar[tuple[str, ...]] = ("sample_rate", "clip_seconds", "n_fft", "hop_length", "n_mels")

    sample_rate: int = Field(22050, ge=8000, le=96000)
    clip_seconds: float = Field(30.0, gt=0, le=600)
    n_fft: int = Field(2048, ge=64)
    hop_length: int = Field(512, ge=16)
    n_mels: int = Field(128, ge=8, le=512)

    @field_validator("n_fft")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of two")
        return value

    @property
    def window_samples(self) -> int:
        """Samples in the analysed window: ``clip_seconds * sample_rate``, rounded."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Frames of a window's spectrogram (centred frames): ``1 + window_samples // hop_length``."""
        return 1 + self.window_samples // self.hop_length

    def as_dict(self) -> dict[str, Any]:
        """The five parameters as a plain dict, in declaration order."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def to_json(self) -> str:
        """The JSON stored in a ``features`` row's ``audio_params`` column (keys sorted)."""
        return json.dumps(self.as_dict(), sort_keys=True)

    def differences(self, other: "AudioParams") -> dict[str, tuple[Any, Any]]:
        """Parameter name -> (this value, ``other``'s value), for each parameter that differs."""
        return {name: (getattr(self, name), getattr(other, name)) for name in self.FIELDS
                if getattr(self, name) != getattr(other, name)}

    @classmethod
    def from_dict(cls, audio: Mapping[str, Any]) -> "AudioParams":
        """The parameters of an audio description: a model bundle's ``audio`` dict (the ``AudioConfig``
        it was trained with, so other keys such as ``min_seconds`` are ignored) or a parsed
        ``audio_params``; ``KeyError`` if one of the five is missing."""
        return cls(**{name: audio[name] for name in cls.FIELDS})

    @classmethod
    def from_json(cls, text: str) -> "AudioParams":
        """Inverse of :meth:`to_json`: the parameters of a ``features`` row's ``audio_params``."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_config(cls, audio: "AudioParams") -> "AudioParams":
        """The plain parameters of the config's ``audio`` section (an ``AudioConfig``, which extends this
        type): equal, and equally hashed, to every other ``AudioParams`` with the same five values."""
        return cls.from_dict(audio.as_dict())
