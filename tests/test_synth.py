"""The synthetic music generator: real MP3s of the requested length, a learnable popularity."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from hitpredict.synth.catalogue import (
    REGIONS, ensure_sample_catalogue, make_catalogue, popularity_signal,
)
from hitpredict.synth.music import TrackStyle, render, write_audio


@pytest.mark.parametrize("seconds,sample_rate,channels", [(30.0, 22050, 1), (4.5, 44100, 2), (1.0, 8000, 1)])
def test_generated_mp3_decodes_to_the_requested_length(tmp_path, seconds, sample_rate, channels):
    path = tmp_path / "clip.mp3"
    write_audio(path, render(TrackStyle(seconds=seconds, seed=1), sample_rate), sample_rate, "MP3", channels)
    head = path.read_bytes()[:3]
    assert head == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0)  # ID3 tag or MPEG frame sync
    info = sf.info(str(path))
    assert info.format == "MP3"
    assert info.samplerate == sample_rate and info.channels == channels
    data, rate = sf.read(str(path))
    assert abs(len(data) / rate - seconds) < 0.05  # within 50 ms: encoder padding is trimmed


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_other_formats_encode_and_decode(tmp_path, fmt):
    path = tmp_path / f"clip.{fmt.lower()}"
    write_audio(path, render(TrackStyle(seconds=2.0), 22050), 22050, fmt)
    data, rate = sf.read(str(path))
    assert rate == 22050 and abs(len(data) - 44100) < 200


def test_a_long_ogg_is_written_from_a_thread_with_a_small_stack(tmp_path):
    """libvorbis allocas every sample handed to it at once: a 30 s clip in one write crashed
    a 1 MiB-stack thread with SIGSEGV. Run in a child so that a crash fails this test only."""
    script = (
        "import sys, threading\n"
        "from hitpredict.synth.music import TrackStyle, render, write_audio\n"
        "threading.stack_size(1 << 20)\n"
        "samples = render(TrackStyle(seconds=30.0, seed=2), 44100)\n"
        "sizes = []\n"
        "worker = threading.Thread(target=lambda: sizes.append(write_audio(sys.argv[1], samples, 44100, 'OGG', 2)))\n"
        "worker.start(); worker.join()\n"
        "assert sizes and sizes[0] > 10_000, sizes\n"
    )
    path = tmp_path / "long.ogg"
    child = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stderr[-2000:]
    data, rate = sf.read(str(path))
    assert rate == 44100 and data.shape[1] == 2 and abs(len(data) - 30 * 44100) < 4096


def test_style_controls_what_is_heard():
    sr = 22050
    base = TrackStyle(seconds=8.0, intro_bars=0, seed=5)

    def centroid(x):
        spectrum = np.abs(np.fft.rfft(x))
        freqs = np.fft.rfftfreq(len(x), 1 / sr)
        return float((spectrum * freqs).sum() / spectrum.sum())

    def rms_db(x):
        return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)))

    dark = render(TrackStyle(**{**base.as_dict(), "brightness": 0.1}), sr)
    bright = render(TrackStyle(**{**base.as_dict(), "brightness": 0.9}), sr)
    assert centroid(bright) > 1.2 * centroid(dark)

    quiet = render(TrackStyle(**{**base.as_dict(), "loudness_db": -22.0}), sr)
    loud = render(TrackStyle(**{**base.as_dict(), "loudness_db": -12.0}), sr)
    assert rms_db(loud) - rms_db(quiet) > 7

    slow = render(TrackStyle(**{**base.as_dict(), "tempo_bpm": 80.0}), sr)
    fast = render(TrackStyle(**{**base.as_dict(), "tempo_bpm": 160.0}), sr)
    assert _onset_rate(fast, sr) > 1.7 * _onset_rate(slow, sr)

    assert np.array_equal(render(base, sr), render(base, sr))  # deterministic
    assert np.abs(render(base, sr)).max() <= 0.9


def _onset_rate(x, sr):
    """Detected note/drum onsets per second."""
    import librosa

    return len(librosa.onset.onset_detect(y=x, sr=sr)) / (len(x) / sr)


def test_bad_style_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="brightness"):
        TrackStyle(brightness=1.5)


def test_planted_popularity_follows_the_audio_and_is_deterministic():
    rows = make_catalogue(400, 20, seed=11)
    assert rows == make_catalogue(400, 20, seed=11)
    assert len({r.track_id for r in rows}) == 400 and len({r.artist for r in rows}) == 20
    pop = np.array([r.popularity for r in rows])
    signal = np.array([popularity_signal(r.style.brightness, r.style.loudness_db) for r in rows])
    assert np.corrcoef(pop, signal)[0, 1] > 0.8           # learnable from the audio...
    assert 0 < np.std(pop - signal) < 12                  # ...but not exactly (noise + artist effect)
    assert pop.min() >= 0 and pop.max() <= 100
    assert 0.3 < np.mean(pop >= 39) < 0.7                 # both classes of the popular target occur
    for r in rows:                                        # region is audible in tempo
        lo, hi = REGIONS[r.region][0]
        assert lo - 10 < r.style.tempo_bpm < hi + 10


def test_sample_catalogue_is_generated_once(tmp_path):
    sample = ensure_sample_catalogue(tmp_path / "s", tracks=6, artists=3, seconds=3.0, workers=1)
    with sample.csv_path.open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["track_id"] for r in table] == [r.track_id for r in sample.rows]
    for row in table:
        data, rate = sf.read(row["audio_uri"])
        assert abs(len(data) / rate - 3.0) < 0.05
    truth = [json.loads(line) for line in (tmp_path / "s" / "truth.jsonl").read_text().splitlines()]
    assert {"brightness", "loudness_db", "tempo_bpm", "popularity"} <= set(truth[0])

    mtimes = {p.name: p.stat().st_mtime_ns for p in sample.audio_dir.iterdir()}
    again = ensure_sample_catalogue(tmp_path / "s", tracks=6, artists=3, seconds=3.0, workers=1)
    assert {p.name: p.stat().st_mtime_ns for p in again.audio_dir.iterdir()} == mtimes

    # Other parameters: stale audio is replaced, not mixed in.
    other = ensure_sample_catalogue(tmp_path / "s", tracks=4, artists=2, seconds=2.0, workers=1)
    assert sorted(p.name for p in other.audio_dir.iterdir()) == sorted(r.audio_file for r in other.rows)
    data, rate = sf.read(str(other.audio_dir / other.rows[0].audio_file))
    assert abs(len(data) / rate - 2.0) < 0.05
