"""Decode audio bytes to the fixed analysis window: mono, 22,050 Hz, 30 s (ARCHITECTURE.md, "The audio front end").

MP3, FLAC, OGG/Vorbis and WAV are decoded by libsndfile (the soundfile wheel); AAC/M4A by
PyAV (its wheel bundles FFmpeg's decoders). No system ffmpeg is needed.

Decoding is bounded: whatever the file, only the centre window (plus a little margin for
the resampler) is decoded, block by block or frame by frame, straight into one preallocated
mono buffer at the source rate. Long files are never decoded whole: libsndfile seeks, M4A
seeks through its index, and ADTS AAC (which has no index) is cut at the frame headers
before decoding. Files with more than ``max_channels`` channels or a rate above
``max_rate_hz`` are refused as ``unsupported_format`` before any sample is decoded, so the
memory a decode needs is at most about ``window_s * max_rate_hz * 4`` bytes plus one block.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Below this RMS (about -80 dBFS) a clip is treated as silence.
SILENCE_RMS = 1e-4
#: Seconds decoded on each side of the window: context for the resampler at its edges.
MARGIN_S = 0.05
#: AAC frames decoded and dropped before the margin when decoding starts mid-stream: the
#: MDCT overlap (one frame) and SBR's delay need them before the output is the stream's.
WARMUP_FRAMES = 4
#: Bytes of interleaved float32 source frames read per libsndfile block.
BLOCK_BYTES = 1 << 20
#: Bodies up to this size reach libsndfile as an in-memory file (memfd) rather than a BytesIO.
MEMFD_MAX_BYTES = 64 << 20


class AudioError(ValueError):
    """Audio that cannot be used; ``kind`` is the error kind stored in the features table."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def sniff_audio(data: bytes) -> str | None:
    """The container/codec of ``data`` from its magic bytes: mp3, aac, m4a, ogg, flac, wav; else ``None``.

    An ID3 tag is skipped and an MPEG frame must follow it, so a file that is only a tag
    is not audio.
    """
    if len(data) < 12:
        return None
    if data[:3] == b"ID3":
        size = ((data[6] & 0x7F) << 21) | ((data[7] & 0x7F) << 14) | ((data[8] & 0x7F) << 7) | (data[9] & 0x7F)
        footer = 10 if data[5] & 0x10 else 0
        rest = data[10 + size + footer:]
        rest = rest.lstrip(b"\x00")  # padding after the tag
        return "mp3" if _mpeg_sync(rest) else None
    if data[4:8] == b"ftyp":
        return "m4a"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        return "aac"  # ADTS
    if _mpeg_sync(data):
        return "mp3"
    return None


def _mpeg_sync(data: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits, a valid version, layer and bitrate."""
    if len(data) < 4 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        return False
    version, layer, bitrate = (data[1] >> 3) & 0x3, (data[1] >> 1) & 0x3, data[2] >> 4
    return version != 1 and layer != 0 and bitrate not in (0, 15)


@dataclass(frozen=True)
class DecodeLimits:
    """What a decoder accepts; anything beyond is ``unsupported_format`` before decoding."""

    max_channels: int = 8
    max_rate_hz: int = 192_000

    def check(self, codec: str, rate: int, channels: int) -> None:
        """Raise ``AudioError("unsupported_format")`` for more channels or a higher rate than allowed."""
        if channels > self.max_channels:
            raise AudioError("unsupported_format", f"{codec}: {channels} channels, at most {self.max_channels}")
        if rate > self.max_rate_hz:
            raise AudioError("unsupported_format", f"{codec}: {rate} Hz, at most {self.max_rate_hz}")
        if rate <= 0 or channels <= 0:
            raise AudioError("decode_error", f"{codec}: {rate} Hz, {channels} channels")


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


class _MonoSpan:
    """Mono samples of source positions ``[lo, hi)``, filled block by block (one buffer, no copies
    of the whole decode). Channels are averaged with a matrix-vector product, stereo with an add and
    an exact halving (numpy's mean over a 2-wide axis is ~10x slower)."""

    def __init__(self, lo: int, hi: int, channels: int) -> None:
        self.lo, self.hi = lo, max(lo, hi)
        self.buf = np.zeros(self.hi - self.lo, dtype=np.float32)
        self.end = lo  # one past the last position written
        self.weights = np.full(channels, 1.0 / channels, dtype=np.float32)

    def put(self, pos: int, block: np.ndarray) -> None:
        """Store the part of ``block`` (frames x channels, or mono) that starts at source position ``pos``."""
        a, b = max(pos, self.lo), min(pos + len(block), self.hi)
        if b <= a:
            return
        part, dst = block[a - pos:b - pos], self.buf[a - self.lo:b - self.lo]
        if part.ndim == 1:
            dst[:] = part
        elif part.shape[1] == 1:
            dst[:] = part[:, 0]
        elif part.shape[1] == 2:   # (l + r) / 2: the same bits as the product (halving is exact), 3x cheaper
            np.add(part[:, 0], part[:, 1], out=dst)
            dst *= np.float32(0.5)
        else:
            np.matmul(part, self.weights, out=dst)
        self.end = max(self.end, b)

    def samples(self) -> np.ndarray:
        return self.buf[: self.end - self.lo]


def _grid_start(lo: int, rate: int, sample_rate: int) -> int:
    """``lo`` rounded down so that it falls on the output grid of resampling the whole stream from
    ``rate`` to ``sample_rate``: the window then holds the very samples a whole decode would give."""
    step = rate // math.gcd(rate, sample_rate) if rate > 0 and sample_rate > 0 else 1
    return lo // step * step


def _memfd(data: bytes) -> int | None:
    """An anonymous in-memory file holding ``data``, positioned at its start (Linux), else None.

    libsndfile then reads it with its own C reads; through a BytesIO every read is a Python
    callback (about 2,400 per 30 s MP3, some 10 ms of CPU per clip).
    """
    if not hasattr(os, "memfd_create") or len(data) > MEMFD_MAX_BYTES:
        return None
    fd = os.memfd_create("hitpredict-audio", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        return None
    return fd


def _decode_soundfile(data: bytes, codec: str, window_s: float,
                      limits: DecodeLimits) -> tuple[np.ndarray, int, float, int, int]:
    import soundfile as sf

    fd = _memfd(data)
    try:
        with sf.SoundFile(io.BytesIO(data) if fd is None else fd, closefd=False) as handle:
            rate, channels, total = handle.samplerate, handle.channels, handle.frames
            limits.check(codec, rate, channels)
            margin = int(MARGIN_S * rate)  # resampler context on both sides of the window
            window = int(round(window_s * rate))
            start, length = window_bounds(max(total, 0), window)
            lo = max(0, start - margin)
            # Unknown length (0): keep the first window, as before, and count the rest.
            hi = min(total, start + length + margin) if total > 0 else window + margin
            to_end = total <= 0
            pos = 0
            if lo and handle.seekable():
                handle.seek(lo)
                pos = lo
            span = _MonoSpan(lo, hi, channels)
            block = np.empty((max(1024, BLOCK_BYTES // (4 * channels)), channels), dtype=np.float32)
            while to_end or pos < hi:
                want = len(block) if to_end else min(len(block), hi - pos)
                got = handle.read(out=block[:want])
                span.put(pos, got)
                pos += len(got)
                if len(got) < want:
                    break
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, MemoryError) as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise AudioError("decode_error", f"{codec}: {detail}") from None
    finally:
        if fd is not None:
            os.close(fd)
    # A truncated file's header still claims its full length: where we read to the end,
    # trust the samples we got.
    read_to_end = to_end or hi >= total
    duration = (pos if read_to_end else total) / rate
    return span.samples(), rate, duration, channels, start - lo


def adts_frames(data: bytes) -> tuple[list[int], list[int]]:
    """Byte offsets of the ADTS frames at the start of ``data`` and the number of AAC blocks
    before each (the last entry is the end: one more than the frames). Stops at the first
    bytes that are not a whole ADTS frame (junk or a truncated tail)."""
    offsets, blocks = [0], [0]
    pos, count, n = 0, 0, len(data)
    while pos + 7 <= n and data[pos] == 0xFF and data[pos + 1] & 0xF6 == 0xF0:
        length = ((data[pos + 3] & 0x03) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        if length < 7 or pos + length > n:
            break
        pos += length
        count += (data[pos - length + 6] & 0x03) + 1
        offsets.append(pos)
        blocks.append(count)
    return offsets, blocks


class _PyAVDecode:
    """Frame-by-frame decoding of one audio stream into a :class:`_MonoSpan` (FFmpeg's own
    downmix to mono, as before); positions in samples of the first frame's rate."""

    def __init__(self, data: bytes, codec: str, limits: DecodeLimits, fmt: str | None = None) -> None:
        import av

        self.av, self.codec, self.limits = av, codec, limits
        self.container = av.open(io.BytesIO(data), mode="r", format=fmt)
        if not self.container.streams.audio:
            self.container.close()
            raise AudioError("unsupported_format", "no audio stream")
        self.stream = self.container.streams.audio[0]
        self.stream.codec_context.thread_count = 1
        ctx = self.stream.codec_context
        # What the container declares is checked before decoding; each frame is checked again.
        declared_rate, declared_channels = int(ctx.sample_rate or self.stream.rate or 0), int(ctx.channels or 0)
        if declared_rate > 0 and declared_channels > 0:
            limits.check(codec, declared_rate, declared_channels)
        self.rate = 0
        self.channels = 0
        self.resampler: Any = None

    def close(self) -> None:
        self.container.close()

    def frames(self):
        """Decoded frames, each checked against the limits (the first one fixes the rate)."""
        for frame in self.container.decode(self.stream):
            channels = frame.layout.nb_channels
            self.limits.check(self.codec, frame.sample_rate, channels)
            if not self.rate:
                self.rate, self.channels = frame.sample_rate, channels
                self.resampler = self.av.AudioResampler(format="flt", layout="mono", rate=self.rate)
            yield frame

    def mono(self, frame) -> np.ndarray:
        out = [o.to_ndarray().reshape(-1) for o in self.resampler.resample(frame)]
        return out[0] if len(out) == 1 else np.concatenate(out) if out else np.zeros(0, np.float32)

    def seek(self, pts: int) -> bool:
        """Seek to the last keyframe at or before ``pts`` (stream time base); False if FFmpeg cannot."""
        try:
            self.container.seek(pts, stream=self.stream, backward=True)
            return True
        except (self.av.error.FFmpegError, ValueError, OverflowError):  # type: ignore[attr-defined]
            return False

    def position(self, frame, origin: int) -> int | None:
        """Sample position of ``frame`` relative to ``origin`` (pts in stream time base), or None."""
        if frame.pts is None:
            return None
        return int(round((frame.pts - origin) * self.stream.time_base * self.rate))


def _decode_adts(data: bytes, window_s: float, sample_rate: int,
                 limits: DecodeLimits) -> tuple[np.ndarray, int, float, int, int]:
    """ADTS AAC has no index: count its frames from their headers (no decoding), then decode only
    the frames of the window, starting ``WARMUP_FRAMES`` earlier, cut out of the byte stream."""
    offsets, blocks = adts_frames(data)
    if len(offsets) < 2:
        raise AudioError("decode_error", "aac: no complete ADTS frame")
    probe = _PyAVDecode(data[: offsets[min(2, len(offsets) - 1)]], "aac", limits, fmt="aac")
    try:
        first = next(probe.frames(), None)
        if first is None:
            return np.zeros(0, np.float32), 0, 0.0, 0, 0
        rate, channels, per_block = probe.rate, probe.channels, first.samples
    finally:
        probe.close()
    total = blocks[-1] * per_block
    start, length = window_bounds(total, int(round(window_s * rate)))
    margin = int(MARGIN_S * rate)
    lo, hi = _grid_start(max(0, start - margin), rate, sample_rate), min(total, start + length + margin)
    # The frame holding position lo, less the warm-up frames.
    starts = np.asarray(blocks, dtype=np.int64) * per_block  # sample position of each frame
    first_frame = max(0, int(np.searchsorted(starts, lo, side="right")) - 1 - WARMUP_FRAMES)
    last_frame = min(len(offsets) - 1, int(np.searchsorted(starts, hi, side="left")) + 1)
    span = _MonoSpan(lo, hi, 1)
    decoder = _PyAVDecode(data[offsets[first_frame]:offsets[last_frame]], "aac", limits, fmt="aac")
    try:
        pos = blocks[first_frame] * per_block
        for frame in decoder.frames():
            if pos + frame.samples > lo:
                span.put(pos, decoder.mono(frame))
            pos += frame.samples
            if pos >= hi:
                break
    finally:
        decoder.close()
    return span.samples(), rate, total / rate, channels, start - lo


def _decode_container(data: bytes, codec: str, window_s: float, sample_rate: int,
                      limits: DecodeLimits) -> tuple[np.ndarray, int, float, int, int]:
    """M4A (and any container FFmpeg indexes): find the stream's first and last sample from the
    first frame and a seek to the end, then seek to the window and decode only its frames. A
    stream that cannot be measured that way is decoded twice: once to count, once to keep."""
    dec = _PyAVDecode(data, codec, limits)
    try:
        first = next(dec.frames(), None)
        if first is None:
            return np.zeros(0, np.float32), 0, 0.0, 0, 0
        rate, channels = dec.rate, dec.channels
        window = int(round(window_s * rate))
        margin = int(MARGIN_S * rate)
        origin = first.pts
        total = None
        tb = dec.stream.time_base
        if origin is not None and dec.stream.duration and tb:
            approx = int(dec.stream.duration * tb * rate)
            if approx <= window:   # short (a 30 s preview): decode it whole, from the start
                total = None
            elif dec.seek(int(origin + dec.stream.duration)):
                end = None
                for frame in dec.frames():
                    p = dec.position(frame, origin)
                    if p is None:
                        end = None
                        break
                    end = p + frame.samples
                total = end
        if total is None:
            return _decode_sequential(data, codec, window_s, sample_rate, limits)
        start, length = window_bounds(total, window)
        lo, hi = _grid_start(max(0, start - margin), rate, sample_rate), min(total, start + length + margin)
        warmup = WARMUP_FRAMES * max(first.samples, 1)
        if not dec.seek(origin + int((max(0, lo - warmup) / rate) / tb)):
            return _decode_sequential(data, codec, window_s, sample_rate, limits)
        span = _MonoSpan(lo, hi, 1)
        for frame in dec.frames():
            p = dec.position(frame, origin)
            if p is None:
                raise AudioError("decode_error", f"{codec}: frame without a timestamp after seeking")
            if p >= hi:
                break
            if p + frame.samples > lo:
                span.put(p, dec.mono(frame))
        return span.samples(), rate, total / rate, channels, start - lo
    finally:
        dec.close()


def _decode_sequential(data: bytes, codec: str, window_s: float, sample_rate: int,
                       limits: DecodeLimits) -> tuple[np.ndarray, int, float, int, int]:
    """Decode from the start, counting samples; keep the window when the length is known
    in advance (it fits in the first pass), else a second pass keeps the centre window."""
    dec = _PyAVDecode(data, codec, limits)
    try:
        span: _MonoSpan | None = None
        pos = 0
        for frame in dec.frames():
            if span is None:
                margin = int(MARGIN_S * dec.rate)
                span = _MonoSpan(0, int(round(window_s * dec.rate)) + margin, 1)
            if pos < span.hi:
                span.put(pos, dec.mono(frame))
            pos += frame.samples
        rate, channels = dec.rate, dec.channels
    finally:
        dec.close()
    if span is None:
        return np.zeros(0, np.float32), 0, 0.0, 0, 0
    window = int(round(window_s * rate))
    if pos <= window:
        return span.samples(), rate, pos / rate, channels, 0
    start, length = window_bounds(pos, window)
    margin = int(MARGIN_S * rate)
    lo, hi = _grid_start(max(0, start - margin), rate, sample_rate), min(pos, start + length + margin)
    span = _MonoSpan(lo, hi, 1)
    dec = _PyAVDecode(data, codec, limits)
    try:
        p = 0
        for frame in dec.frames():
            if p >= hi:
                break
            if p + frame.samples > lo:
                span.put(p, dec.mono(frame))
            p += frame.samples
    finally:
        dec.close()
    return span.samples(), rate, pos / rate, channels, start - lo


def _decode_pyav(data: bytes, codec: str, window_s: float, sample_rate: int,
                 limits: DecodeLimits) -> tuple[np.ndarray, int, float, int, int]:
    import av

    try:
        if codec == "aac":
            return _decode_adts(data, window_s, sample_rate, limits)
        return _decode_container(data, codec, window_s, sample_rate, limits)
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, MemoryError) as exc:  # type: ignore[attr-defined]
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise AudioError("decode_error", f"{codec}: {detail}") from None


def decode_clip(data: bytes, sample_rate: int = 22050, window_s: float = 30.0, min_seconds: float = 5.0,
                limits: DecodeLimits = DecodeLimits()) -> DecodedClip:
    """Decode ``data`` to the analysis window.

    Raises ``AudioError`` with kind ``empty``, ``unsupported_format`` (not audio, or beyond
    ``limits``), ``decode_error``, ``too_short`` (under ``min_seconds`` of audio) or ``silent``.
    """
    import soxr

    if not data:
        raise AudioError("empty", "zero bytes")
    codec = sniff_audio(data)
    if codec is None:
        raise AudioError("unsupported_format", f"not a known audio container (starts {data[:12]!r})")
    if codec in ("m4a", "aac"):
        mono, rate, duration, channels, offset = _decode_pyav(data, codec, window_s, sample_rate, limits)
    else:
        mono, rate, duration, channels, offset = _decode_soundfile(data, codec, window_s, limits)
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
