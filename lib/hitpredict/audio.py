"""Decode audio bytes to the fixed analysis window: mono, 22,050 Hz, 30 s (DESIGN.md section 6).

MP3, FLAC, OGG/Vorbis and WAV are decoded by libsndfile (the soundfile wheel); AAC/M4A by
PyAV (its wheel bundles FFmpeg's decoders). No system ffmpeg is needed. Only the samples
of the centre window (plus a little margin for the resampler) are decoded from long files.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from hitpredict.fetch import sniff_audio

#: Below this RMS (about -80 dBFS) a clip is treated as silence.
SILENCE_RMS = 1e-4


class AudioError(ValueError):
    """Audio that cannot be used; ``kind`` is the error kind stored in the features table."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class DecodedClip:
    """The analysis window and what was learnt decoding it."""

    samples: np.ndarray        # float32, mono, exactly window_samples long
    sample_rate: int
    duration_s: float          # of the whole decoded file, before cropping
    source_rate: int
    channels: int
    codec: str


def window_bounds(total_frames: int, window_frames: int) -> tuple[int, int]:
    """Start and length of the centred window inside ``total_frames`` (no tiling, ever)."""
    if total_frames <= window_frames:
        return 0, total_frames
    return (total_frames - window_frames) // 2, window_frames


def pad_window(samples: np.ndarray, window_samples: int) -> np.ndarray:
    """The first ``window_samples`` of ``samples``, zero-padded at the end if it is shorter."""
    out = np.zeros(window_samples, dtype=np.float32)
    n = min(len(samples), window_samples)
    out[:n] = samples[:n]
    return out


def _to_mono(data: np.ndarray) -> np.ndarray:
    """Average the channels (a matrix-vector product: numpy's mean over a 2-wide axis is ~10x slower)."""
    if data.ndim == 1:
        return data
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0])
    return data @ np.full(data.shape[1], 1.0 / data.shape[1], dtype=np.float32)


def _decode_soundfile(data: bytes, codec: str, window_s: float) -> tuple[np.ndarray, int, float, int, int]:
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            rate, channels, total = handle.samplerate, handle.channels, handle.frames
            margin = int(0.05 * rate)  # resampler context on both sides of the window
            start, length = window_bounds(total, int(round(window_s * rate)))
            lo = max(0, start - margin)
            hi = min(total, start + length + margin) if total > 0 else -1
            if lo and handle.seekable():
                handle.seek(lo)
            else:
                lo = 0
            frames = handle.read(frames=(hi - lo) if hi >= 0 else -1, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError("decode_error", f"{codec}: {str(exc).splitlines()[0][:200]}") from None
    # A truncated file's header still claims its full length: where we read to the end,
    # trust the samples we got.
    read_to_end = hi < 0 or hi >= total
    duration = (lo + len(frames) if read_to_end else total) / rate
    return _to_mono(frames), rate, duration, channels, start - lo


def _decode_pyav(data: bytes, window_s: float) -> tuple[np.ndarray, int, float, int, int]:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioError("unsupported_format", "no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            channels = stream.codec_context.channels or 1
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            parts = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError) as exc:  # type: ignore[attr-defined]
        raise AudioError("decode_error", f"m4a: {str(exc).splitlines()[0][:200]}") from None
    mono = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    start, _ = window_bounds(len(mono), int(round(window_s * rate))) if rate else (0, 0)
    return mono, int(rate), len(mono) / rate if rate else 0.0, int(channels), start


def decode_clip(data: bytes, sample_rate: int = 22050, window_s: float = 30.0, min_seconds: float = 5.0) -> DecodedClip:
    """Decode ``data`` to the analysis window.

    Raises ``AudioError`` with kind ``empty``, ``unsupported_format``, ``decode_error``,
    ``too_short`` (under ``min_seconds`` of audio) or ``silent``.
    """
    import soxr

    if not data:
        raise AudioError("empty", "zero bytes")
    codec = sniff_audio(data)
    if codec is None:
        raise AudioError("unsupported_format", f"not a known audio container (starts {data[:12]!r})")
    if codec in ("m4a", "aac"):
        mono, rate, duration, channels, offset = _decode_pyav(data, window_s)
    else:
        mono, rate, duration, channels, offset = _decode_soundfile(data, codec, window_s)
    if len(mono) == 0 or duration == 0:
        raise AudioError("empty", f"{codec} with no samples")
    if duration < min_seconds:
        raise AudioError("too_short", f"{duration:.2f}s of audio, need at least {min_seconds:g}s")
    if not np.all(np.isfinite(mono)):
        raise AudioError("decode_error", "non-finite samples")
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
        offset = int(round(offset * sample_rate / rate))
    window = pad_window(mono[offset:], int(round(window_s * sample_rate)))
    if float(np.sqrt(np.mean(window.astype(np.float64) ** 2))) < SILENCE_RMS:
        raise AudioError("silent", f"RMS below {20 * np.log10(SILENCE_RMS):.0f} dBFS")
    return DecodedClip(window, sample_rate, float(duration), int(rate), int(channels), codec)
