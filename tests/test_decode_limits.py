"""Decoding is bounded (issue 12, section 3).

Only the centre window is decoded (seeking, or cutting ADTS at its frame headers), straight into
one buffer; more than 8 channels or more than 192 kHz is ``unsupported_format``; the peak memory
of decoding any body within the fetch size cap stays under 256 MiB above the worker's baseline
(measured in a fresh process on crafted files); and a decoder that crashes, hangs or runs out of
memory costs one ``decode_error`` row, not the task, and is not retried by a rerun.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

from hitpredict.audio import AudioError, DecodeLimits, decode_clip
from hitpredict.audio_params import AudioParams
from hitpredict.clip_features import features_row
from hitpredict.stages.extract_features import FeatureTask
from hitpredict.synth.music import TrackStyle, render, write_audio

MIB = 1024 * 1024
#: The issue's bound on a decode's peak memory above the worker's baseline.
PEAK_LIMIT = 256 * MIB
PARAMS = AudioParams()


# -- crafted files -------------------------------------------------------------------------------
def adts_frames_of(data: bytes) -> list[bytes]:
    """The ADTS frames of ``data`` (split at the 13-bit frame length of each header)."""
    frames, pos = [], 0
    while pos + 7 <= len(data):
        length = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        frames.append(data[pos:pos + length])
        pos += length
    return frames


def adts_encode(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    """ADTS AAC from mono float ``samples`` with PyAV's encoder (``channels`` copies)."""
    import av

    layout = {1: "mono", 2: "stereo"}[channels]
    out = io.BytesIO()
    with av.open(out, "w", format="adts") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = layout
        for start in range(0, len(samples), 1024):
            block = np.stack([samples[start:start + 1024]] * channels).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def adts_silence(nbytes: int, rate: int = 44100) -> bytes:
    """About ``nbytes`` of ADTS AAC silence: PyAV encodes one second, then its steady silent frame
    (11 bytes: 1,024 samples) repeats. 1.24 MB holds about 44 minutes."""
    frames = adts_frames_of(adts_encode(np.zeros(rate, np.float32), rate))
    steady = frames[len(frames) // 2]
    return b"".join(frames[:4]) + steady * max(0, (nbytes - sum(map(len, frames[:4]))) // len(steady))


def soundfile_silence(fmt: str, subtype: str, rate: int, channels: int, seconds: int) -> bytes:
    """``seconds`` of digital silence encoded by libsndfile (tiny files: silence compresses)."""
    import soundfile as sf

    out = io.BytesIO()
    with sf.SoundFile(out, "w", rate, channels, subtype, format=fmt) as handle:
        block = np.zeros((rate, channels), np.float32)
        for _ in range(seconds):
            handle.write(block)
    return out.getvalue()


CRAFTED = {
    # name: (how to make it, the error kind decoding must end with)
    "adts_silence_1.24MB": (lambda: adts_silence(1_240_000), "silent"),
    "adts_silence_10MB": (lambda: adts_silence(10 * MIB - 1024), "silent"),
    "ogg_vorbis_32ch_192kHz": (lambda: soundfile_silence("OGG", "VORBIS", 192_000, 32, 15), "unsupported_format"),
    "flac_8ch_655kHz": (lambda: soundfile_silence("FLAC", "PCM_16", 655_350, 8, 20), "unsupported_format"),
    # The largest format still allowed, decoded for real.
    "flac_8ch_192kHz": (lambda: soundfile_silence("FLAC", "PCM_16", 192_000, 8, 60), "silent"),
}


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """name -> path of the crafted file, made on first use."""
    folder = tmp_path_factory.mktemp("crafted")
    made: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in made:
            path = folder / name
            path.write_bytes(CRAFTED[name][0]())
            made[name] = str(path)
        return made[name]

    return get


#: Run in a fresh interpreter: warm up on an ordinary clip, read the body, reset the kernel's
#: peak-RSS mark (``/proc/self/clear_refs`` 5), take the resident size as the baseline, decode, and
#: report the peak resident size since the reset (``VmHWM``: C allocations included, unlike
#: tracemalloc) minus the baseline. Only the decode counts, whatever the start-up peaked at.
PEAK_SCRIPT = r"""
import io, json, os, sys, time
import numpy as np, soundfile as sf
from hitpredict.audio import AudioError, decode_clip

def status_kib(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))

warm = io.BytesIO()
sf.write(warm, (0.1 * np.sin(np.arange(6 * 44100) / 7.0)).astype(np.float32), 44100, format="WAV")
decode_clip(warm.getvalue())
data = open(sys.argv[1], "rb").read()
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
baseline = status_kib("VmRSS") * 1024
started = time.process_time()
try:
    decode_clip(data)
    kind, detail = "ok", ""
except AudioError as err:
    kind, detail = err.kind, err.detail
peak = status_kib("VmHWM") * 1024
print(json.dumps({"kind": kind, "detail": detail, "over_baseline": peak - baseline,
                  "cpu_s": time.process_time() - started}))
"""


def peak_over_baseline(path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, path], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CRAFTED))
def test_decoding_a_crafted_body_peaks_under_256_mib_above_the_baseline(crafted, name):
    # Before: the 1.24 MB ADTS file took ~1.4 GiB and 10-16 s (decoded whole, then copied twice),
    # the 32-channel Ogg ~270 MiB, the 655 kHz FLAC ~430 MiB.
    path = crafted(name)
    assert os.path.getsize(path) <= 10 * MIB  # within the fetch size cap
    result = peak_over_baseline(path)
    assert result["kind"] == CRAFTED[name][1], result
    assert result["over_baseline"] < PEAK_LIMIT, f"{name}: {result['over_baseline'] / MIB:.0f} MiB over baseline"


def test_long_adts_is_cut_at_its_frame_headers_not_decoded_whole(crafted):
    result = peak_over_baseline(crafted("adts_silence_10MB"))  # ~6 hours of AAC
    assert result["kind"] == "silent"
    assert result["cpu_s"] < 10, result  # decoding the whole file takes minutes


# -- limits --------------------------------------------------------------------------------------
def noise_wav(rate: int, channels: int, seconds: float = 1.0) -> bytes:
    import soundfile as sf

    rng = np.random.default_rng(1)
    out = io.BytesIO()
    sf.write(out, (0.1 * rng.standard_normal((int(rate * seconds), channels))).astype(np.float32), rate,
             format="WAV", subtype="PCM_16")
    return out.getvalue()


@pytest.mark.parametrize("rate,channels,refused", [
    (48_000, 9, "9 channels"), (44_100, 16, "16 channels"), (192_001, 2, "192001 Hz"), (384_000, 1, "384000 Hz"),
])
def test_more_than_8_channels_or_192_khz_is_unsupported_format(rate, channels, refused):
    data = noise_wav(rate, channels)
    with pytest.raises(AudioError) as err:
        decode_clip(data, min_seconds=0.5)
    assert err.value.kind == "unsupported_format" and refused in err.value.detail
    row = features_row("t", None, data, PARAMS, 0.5)
    assert (row["status"], row["error_kind"]) == ("failed", "unsupported_format")


def test_the_limits_themselves_are_allowed():
    clip = decode_clip(noise_wav(192_000, 8), min_seconds=0.5)
    assert (clip.source_rate, clip.channels, len(clip.samples)) == (192_000, 8, 661_500)


def test_limits_apply_to_ffmpeg_decoded_formats_too(tmp_path):
    write_audio(tmp_path / "s.m4a", render(TrackStyle(seconds=6.0, seed=2), 44100), 44100, "M4A", 2)
    data = (tmp_path / "s.m4a").read_bytes()
    assert decode_clip(data).channels == 2
    with pytest.raises(AudioError) as err:
        decode_clip(data, limits=DecodeLimits(max_channels=1))
    assert err.value.kind == "unsupported_format"
    adts = adts_encode(render(TrackStyle(seconds=6.0, seed=2), 44100), 44100, 2)
    with pytest.raises(AudioError) as err:
        decode_clip(adts, limits=DecodeLimits(max_rate_hz=32_000))
    assert err.value.kind == "unsupported_format"


def test_config_declares_the_decode_bounds():
    from hitpredict.config import ConfigError, load_config

    features = load_config("conf/local.yaml").features
    assert (features.max_channels, features.max_source_rate_hz, features.decode_in_child) == (8, 192_000, True)
    with pytest.raises(ConfigError, match="decode_memory_mib"):
        load_config(None, ["features.decode_memory_mib=1"], environ={})


# -- seeking keeps the window ----------------------------------------------------------------------
def full_decode_window(data: bytes, fmt: str, window_s: float = 30.0, sample_rate: int = 22050) -> np.ndarray:
    """The reference: decode the whole stream with PyAV, downmix, resample it whole, take the centre."""
    import av
    import soxr

    with av.open(io.BytesIO(data), format=fmt) as container:
        stream = container.streams.audio[0]
        resampler, parts, rate = None, [], 0
        for frame in container.decode(stream):
            if resampler is None:
                rate = frame.sample_rate
                resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
    mono = soxr.resample(np.concatenate(parts), rate, sample_rate, quality="HQ")
    total, window = len(np.concatenate(parts)), int(round(window_s * rate))
    start = (total - window) // 2 if total > window else 0
    offset = int(round(start * sample_rate / rate))
    out = np.zeros(int(round(window_s * sample_rate)), np.float32)
    part = mono[offset:offset + len(out)]
    out[:len(part)] = part
    return out


@pytest.mark.parametrize("container,rate,seconds", [("adts", 44100, 200.0), ("adts", 48000, 45.0),
                                                    ("mp4", 44100, 200.0), ("mp4", 22050, 31.0)])
def test_seeking_gives_the_centre_window_of_a_whole_decode(tmp_path, container, rate, seconds):
    # A tone sweep under a slow tremolo: AAC codes it without noise substitution (whose random
    # generator would differ after a seek), and a window off by one sample differs by ~0.1.
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * (220 + 5 * t) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)
    if container == "adts":
        data = adts_encode(tone, rate, 2)
    else:
        write_audio(tmp_path / "t.m4a", tone, rate, "M4A", 2)
        data = (tmp_path / "t.m4a").read_bytes()
    clip = decode_clip(data)
    assert clip.duration_s == pytest.approx(seconds, abs=0.1)  # plus the encoder's priming frames
    assert np.abs(clip.samples - full_decode_window(data, "aac" if container == "adts" else None)).max() < 1e-4
    assert np.array_equal(decode_clip(data).samples, clip.samples)  # deterministic


# -- a decoder that fails costs only its file ----------------------------------------------------------
def faulty_decode(data: bytes, sample_rate: int, window_s: float, min_seconds: float, limits: DecodeLimits):
    """decode_clip, except for bytes that end with a marker: crash, hang, or allocate past the cap."""
    if data.endswith(b"EXIT"):
        os._exit(3)
    if data.endswith(b"SEGV"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if data.endswith(b"HANG"):
        time.sleep(600)
    if data.endswith(b"HOG!"):
        hog = np.ones(2 * 1024 * MIB // 8)  # 2 GiB, past the child's cap
        return hog  # never reached
    return decode_clip(data, sample_rate, window_s, min_seconds, limits)


@pytest.fixture(scope="module")
def good_mp3s(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    out = []
    for i in range(3):
        write_audio(folder / f"{i}.mp3", render(TrackStyle(seconds=8.0, seed=i), 44100), 44100, "MP3", 2)
        out.append((folder / f"{i}.mp3").read_bytes())
    return out


def test_a_crashing_hanging_or_hogging_decoder_costs_one_decode_error_row(good_mp3s):
    good = good_mp3s
    items = [("g0", good[0]), ("exit", good[1] + b"EXIT"), ("g1", good[1]), ("segv", good[0] + b"SEGV"),
             ("hog", good[2] + b"HOG!"), ("hang", good[2] + b"HANG"), ("g2", good[2])]
    batch = pa.RecordBatch.from_pydict({"track_id": [t for t, _ in items], "sha256": [None] * len(items),
                                        "audio": [a for _, a in items]})
    task = FeatureTask(PARAMS, 5.0, memory_mib=256, timeout_s=5.0, decode_fn=faulty_decode)
    started = time.monotonic()
    rows = {r["track_id"]: r for b in task(iter([batch])) for r in b.to_pylist()}
    assert time.monotonic() - started < 60
    assert {t: (r["status"], r["error_kind"]) for t, r in rows.items()} == {
        "g0": ("ok", None), "g1": ("ok", None), "g2": ("ok", None),
        "exit": ("failed", "decode_error"), "segv": ("failed", "decode_error"),
        "hog": ("failed", "decode_error"), "hang": ("failed", "decode_error"),
    }
    assert "exit status 3" in rows["exit"]["error_detail"]
    assert "SIGSEGV" in rows["segv"]["error_detail"]
    assert "out of memory" in rows["hog"]["error_detail"]
    assert "no answer within 5s" in rows["hang"]["error_detail"]
    # The good files' features are bit-identical to decoding in this process.
    for track_id, data in (("g0", good[0]), ("g1", good[1]), ("g2", good[2])):
        assert rows[track_id]["mel"] == features_row(track_id, None, data, PARAMS, 5.0)["mel"]


def test_extract_features_finishes_past_a_crashing_decoder_and_a_rerun_does_not_retry_it(spark, tmp_path, good_mp3s):
    from pyspark import cloudpickle

    from hitpredict.config import load_config
    from hitpredict.lake import DeltaRsLake
    from hitpredict.stages import extract_features, fetch_previews, ingest_catalogue

    folder = tmp_path / "audio"
    folder.mkdir()
    for i, data in enumerate(good_mp3s):
        (folder / f"good{i}.mp3").write_bytes(data)
    (folder / "crash.mp3").write_bytes(good_mp3s[0] + b"SEGV")  # a valid MP3 to the fetcher
    config = load_config(None, [f"lake.root={tmp_path / 'lakehouse'}", "features.decode_timeout_s=20"], environ={})
    lake = DeltaRsLake(config.lake, spark)
    ingest_catalogue.run(config, spark, lake, str(folder))
    assert fetch_previews.run(config, spark, lake).ok == 4
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # faulty_decode travels to the executors
    try:
        report = extract_features.run(config, spark, lake, decode_fn=faulty_decode)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert (report.ok, report.failed) == (3, {"decode_error": 1})
    names = {r.track_id: r.audio_uri.rsplit("/", 1)[-1] for r in lake.read("catalogue").collect()}
    rows = {names[r["track_id"]]: r for r in lake.read_arrow("features").to_pylist()}
    assert rows["crash.mp3"]["error_kind"] == "decode_error" and "SIGSEGV" in rows["crash.mp3"]["error_detail"]
    assert all(rows[f"good{i}.mp3"]["status"] == "ok" for i in range(3))
    rerun = extract_features.run(config, spark, lake)  # the failed row is settled: nothing to do
    assert rerun.rows_in == 0 and len(lake.read_arrow("features")) == 4
