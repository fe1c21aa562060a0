"""A small synthesiser of beat-driven music: drums, bass and chords, as numpy arrays.

Used to make real audio files for tests, benchmarks and the demo, so nothing is
ever downloaded. Every parameter that a popularity, artist or region model could
pick up is explicit in :class:`TrackStyle`, and the same style and seed always give
the same samples.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

#: Semitone offsets of the chord roots of a 4-bar loop, by mode.
PROGRESSIONS = {False: (0, 7, 9, 5), True: (0, 8, 3, 10)}  # I-V-vi-IV ; i-VI-III-VII
_MAJOR_TRIAD, _MINOR_TRIAD = (0, 4, 7), (0, 3, 7)
_MINOR_DEGREES = {0: True, 8: False, 3: False, 10: False}
_MAJOR_DEGREES = {0: False, 7: False, 9: True, 5: False}


@dataclass(frozen=True)
class TrackStyle:
    """What a generated track sounds like.

    Attributes
    ----------
    tempo_bpm : beats per minute, 50-200.
    key : tonic, semitones above C (0-11).
    minor : minor mode instead of major.
    swing : delay of off-beat hi-hats as a fraction of an eighth note (0 straight, 0.5 hard swing).
    brightness : 0 (dark: few harmonics, quiet hats) to 1 (bright: rich harmonics, loud hats).
    loudness_db : target RMS level of the mix in dBFS (e.g. -20 quiet, -8 loud).
    seconds : length of the track in seconds.
    intro_bars : bars of chords alone before the drums and bass come in.
    seed : seeds the noise of the drums and small per-hit variations.
    """

    tempo_bpm: float = 100.0
    key: int = 0
    minor: bool = False
    swing: float = 0.0
    brightness: float = 0.5
    loudness_db: float = -14.0
    seconds: float = 30.0
    intro_bars: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "tempo_bpm": 50 <= self.tempo_bpm <= 200,
            "key": 0 <= self.key <= 11,
            "swing": 0 <= self.swing <= 0.5,
            "brightness": 0 <= self.brightness <= 1,
            "loudness_db": -40 <= self.loudness_db <= -3,
            "seconds": 0 < self.seconds <= 1200,
            "intro_bars": self.intro_bars >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"TrackStyle.{name} = {getattr(self, name)!r} is out of range")

    def as_dict(self) -> dict[str, float | int | bool]:
        """The style's fields as a plain dict (field name -> value)."""
        return asdict(self)


@dataclass
class _Grid:
    """Sample positions of the musical grid of one 4-bar loop."""

    sample_rate: int
    tempo_bpm: float
    beat: float = field(init=False)  # samples per beat
    bar: int = field(init=False)
    loop: int = field(init=False)

    def __post_init__(self) -> None:
        self.beat = 60.0 / self.tempo_bpm * self.sample_rate
        self.bar = int(round(4 * self.beat))
        self.loop = 4 * self.bar


def _midi_hz(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def _place(out: np.ndarray, sound: np.ndarray, start: int) -> None:
    """Add ``sound`` into ``out`` at ``start``, cut at the end of ``out``."""
    if start >= len(out):
        return
    end = min(len(out), start + len(sound))
    out[start:end] += sound[: end - start]


def _decay(n: int, sample_rate: int, seconds: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (seconds * sample_rate))


def _harmonic_tone(freq: float, n: int, sample_rate: int, brightness: float, max_harmonics: int) -> np.ndarray:
    """A tone whose harmonic k has amplitude k**-(2.2 - 1.6*brightness), below Nyquist."""
    t = np.arange(n) / sample_rate
    tone = np.zeros(n)
    rolloff = 2.2 - 1.6 * brightness
    for k in range(1, max_harmonics + 1):
        if k * freq >= sample_rate / 2 * 0.9:
            break
        tone += k ** -rolloff * np.sin(2 * np.pi * k * freq * t)
    return tone


def _drum_loop(style: TrackStyle, grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    sr = grid.sample_rate
    out = np.zeros(grid.loop)
    n_kick, n_snare, n_hat = int(0.35 * sr), int(0.2 * sr), int(0.06 * sr)
    t = np.arange(n_kick) / sr
    sweep = 45 + 75 * np.exp(-t / 0.04)
    kick = np.sin(2 * np.pi * np.cumsum(sweep) / sr) * _decay(n_kick, sr, 0.12)
    snare_tone = np.sin(2 * np.pi * 185 * np.arange(n_snare) / sr) * _decay(n_snare, sr, 0.05)
    hat_level = 0.12 + 0.45 * style.brightness
    eighth = grid.beat / 2
    for bar in range(4):
        bar_start = bar * grid.bar
        for beat in range(4):
            start = int(bar_start + beat * grid.beat)
            if beat in (0, 2) or (beat == 3 and bar % 2 == 1):
                _place(out, kick * rng.uniform(0.9, 1.0), start)
            if beat in (1, 3):
                noise = rng.standard_normal(n_snare) * _decay(n_snare, sr, 0.07)
                _place(out, 0.45 * noise + 0.35 * snare_tone, start)
            for half in range(2):
                offset = eighth * (half + (style.swing if half else 0.0))
                hat = np.diff(rng.standard_normal(n_hat + 1)) * _decay(n_hat, sr, 0.015 + 0.02 * style.brightness)
                _place(out, hat_level * rng.uniform(0.7, 1.0) * hat, int(start + offset))
    return out


def _bass_loop(style: TrackStyle, grid: _Grid) -> np.ndarray:
    sr = grid.sample_rate
    out = np.zeros(grid.loop)
    n_note = int(grid.beat * 0.9)
    env = np.minimum(1.0, np.arange(n_note) / (0.005 * sr)) * _decay(n_note, sr, 0.35)
    for bar, degree in enumerate(PROGRESSIONS[style.minor]):
        freq = _midi_hz(36 + style.key + degree)
        note = _harmonic_tone(freq, n_note, sr, style.brightness * 0.6, max_harmonics=6) * env
        for beat in (0, 1.5, 2, 3):
            _place(out, note, int(bar * grid.bar + beat * grid.beat))
    return out


def _chord_loop(style: TrackStyle, grid: _Grid) -> np.ndarray:
    sr = grid.sample_rate
    out = np.zeros(grid.loop)
    n = grid.bar
    attack = np.minimum(1.0, np.arange(n) / (0.03 * sr))
    release = np.minimum(1.0, (n - np.arange(n)) / (0.05 * sr))
    env = attack * release * (0.6 + 0.4 * _decay(n, sr, 1.5))
    qualities = _MINOR_DEGREES if style.minor else _MAJOR_DEGREES
    for bar, degree in enumerate(PROGRESSIONS[style.minor]):
        triad = _MINOR_TRIAD if qualities[degree] else _MAJOR_TRIAD
        chord = sum(
            _harmonic_tone(_midi_hz(60 + style.key + degree + interval), n, sr, style.brightness, max_harmonics=8)
            for interval in triad
        )
        out[bar * grid.bar: bar * grid.bar + n] += chord * env
    return out


def render(style: TrackStyle, sample_rate: int = 22050) -> np.ndarray:
    """Render ``style`` as mono float32 samples in [-1, 1], exactly ``seconds`` long.

    The track is a 4-bar loop of drums, bass and chords repeated to length, after
    ``intro_bars`` of chords alone; its RMS level is ``loudness_db`` dBFS (before a
    soft limiter that keeps peaks inside [-0.89, 0.89]).
    """
    rng = np.random.default_rng(style.seed)
    grid = _Grid(sample_rate, style.tempo_bpm)
    total = int(round(style.seconds * sample_rate))
    drums = _drum_loop(style, grid, rng)
    bass = _bass_loop(style, grid)
    chords = _chord_loop(style, grid)
    loop_full = 1.0 * drums + 0.55 * bass / max(1e-9, np.abs(bass).max()) + 0.35 * chords / max(1e-9, np.abs(chords).max())
    loop_intro = 0.35 * chords / max(1e-9, np.abs(chords).max())
    intro = np.resize(loop_intro, min(total, style.intro_bars * grid.bar))
    body = np.resize(loop_full, total - len(intro))
    mix = np.concatenate([intro, body])
    rms = np.sqrt(np.mean(mix**2)) or 1.0
    mix *= 10 ** (style.loudness_db / 20) / rms
    # Soft limiter, then 1 dB of headroom so the MP3 encoder's overshoot rarely clips.
    return (0.89 * np.tanh(mix)).astype(np.float32)


AudioFormat = Literal["MP3", "WAV", "FLAC", "OGG", "M4A"]


WRITE_BLOCK_FRAMES = 16_384  # frames per libsndfile write (see write_audio)


def write_audio(
    path: str | os.PathLike[str],
    samples: np.ndarray,
    sample_rate: int,
    audio_format: AudioFormat = "MP3",
    channels: int = 1,
) -> int:
    """Encode ``samples`` (mono) to ``path``; ``channels=2`` writes a slightly widened stereo file.

    Returns the size of the file in bytes. MP3 is encoded by libsndfile (LAME), bundled
    with the soundfile wheel; M4A (AAC) by PyAV's bundled FFmpeg: no system ffmpeg or lame.
    """
    import soundfile as sf

    if audio_format == "M4A":
        return _write_m4a(path, samples, sample_rate, channels)
    data = samples
    if channels == 2:
        data = np.stack([samples, np.roll(samples, 7)], axis=1)
    elif channels != 1:
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    subtype = {"MP3": "MPEG_LAYER_III", "WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[audio_format]
    # Blocks, never the whole clip in one call: libvorbis allocas a float per sample submitted
    # at once, so one 10 s OGG write overflows a 1 MiB thread stack (a segfault, not an error).
    # The MP3 bytes are the same either way.
    with sf.SoundFile(os.fspath(path), "w", sample_rate, data.shape[1] if data.ndim == 2 else 1,
                      subtype, format=audio_format) as handle:
        for start in range(0, len(data), WRITE_BLOCK_FRAMES):
            handle.write(data[start:start + WRITE_BLOCK_FRAMES])
    return os.path.getsize(path)


def _write_m4a(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int, channels: int) -> int:
    import av

    layout = {1: "mono", 2: "stereo"}[channels]
    data = np.stack([samples] * channels).astype(np.float32)
    with av.open(os.fspath(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = layout
        for start in range(0, data.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start:start + 1024]), format="fltp",
                                               layout=layout)
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return os.path.getsize(path)
