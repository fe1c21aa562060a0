"""Audio decoding and the mel front end: correct, deterministic, and robust to bad files."""
from __future__ import annotations

import numpy as np
import pytest

from hitpredict.audio import AudioError, decode_clip
from hitpredict.audio_params import AudioParams
from hitpredict.clip_features import features_row
from hitpredict.features import (
    SUMMARY_SIZE, decode_mel, encode_mel, estimate_tempo, log_mel, summary_vector,
)
from hitpredict.synth.music import TrackStyle, render, write_audio

PARAMS = AudioParams()


def encoded(tmp_path, name, seconds=30.0, rate=22050, fmt="MP3", channels=1, **style):
    path = tmp_path / name
    write_audio(path, render(TrackStyle(seconds=seconds, seed=4, **style), rate), rate, fmt, channels)
    return path.read_bytes()


def test_log_mel_matches_the_reference_librosa_loop(tmp_path):
    import librosa

    data = encoded(tmp_path, "a.mp3", rate=44100, channels=2)
    y, sr = librosa.load(str(tmp_path / "a.mp3"), duration=30)
    reference = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr))
    mel, _ = log_mel(decode_clip(data).samples, PARAMS)
    assert mel.shape == reference.shape == (128, 1292)
    assert np.abs(mel - reference).max() < 0.05  # dB


def test_same_bytes_give_bit_identical_features(tmp_path):
    data = encoded(tmp_path, "a.mp3")
    first = features_row("t", "h", data, PARAMS, 5.0)
    second = features_row("t", "h", data, PARAMS, 5.0)
    assert first["status"] == "ok"
    assert first["mel"] == second["mel"] and first["summary"] == second["summary"]
    assert len(first["summary"]) == SUMMARY_SIZE
    mel = decode_mel(first["mel"], first["mel_shape"])
    assert mel.dtype == np.float16 and mel.shape == (128, 1292)


def test_window_is_centre_cropped_or_zero_padded_never_tiled(tmp_path):
    long_clip = decode_clip(encoded(tmp_path, "long.mp3", seconds=40.0, intro_bars=0))
    assert long_clip.duration_s == pytest.approx(40.0, abs=0.05) and len(long_clip.samples) == 661500
    short_clip = decode_clip(encoded(tmp_path, "short.mp3", seconds=8.0))
    tail = short_clip.samples[int(8.1 * 22050):]
    assert len(short_clip.samples) == 661500 and not np.any(tail)  # zeros, not a repeat
    # Centre crop: the window equals seconds 5..35 of the long file.
    import soundfile as sf

    full, _ = sf.read(str(tmp_path / "long.mp3"), dtype="float32")
    assert np.allclose(long_clip.samples, full[5 * 22050: 5 * 22050 + 661500], atol=1e-6)


@pytest.mark.parametrize("fmt,rate,channels", [("WAV", 48000, 2), ("FLAC", 8000, 1), ("OGG", 44100, 2),
                                               ("M4A", 44100, 1), ("MP3", 48000, 2)])
def test_formats_and_rates_decode_to_the_same_window(tmp_path, fmt, rate, channels):
    clip = decode_clip(encoded(tmp_path, f"x.{fmt.lower()}", seconds=10.0, rate=rate, fmt=fmt, channels=channels))
    assert (clip.source_rate, clip.channels, clip.sample_rate) == (rate, channels, 22050)
    assert clip.duration_s == pytest.approx(10.0, abs=0.1)
    assert len(clip.samples) == 661500


@pytest.mark.parametrize("make,kind", [
    (lambda p: b"", "empty"),
    (lambda p: b"<html><body>nope</body></html>" * 5, "unsupported_format"),
    (lambda p: encoded(p, "s.mp3", seconds=1.0), "too_short"),
    (lambda p: encoded(p, "q.wav", seconds=10.0, fmt="WAV", loudness_db=-40)[:44] + bytes(441000), "silent"),
    (lambda p: b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(16), "unsupported_format"),
    (lambda p: b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64), "decode_error"),
])
def test_bad_audio_fails_with_its_kind(tmp_path, make, kind):
    with pytest.raises(AudioError) as err:
        decode_clip(make(tmp_path))
    assert err.value.kind == kind
    row = features_row("t", None, make(tmp_path), PARAMS, 5.0)
    assert (row["status"], row["error_kind"]) == ("failed", kind)


def test_summary_vector_hears_brightness_and_loudness():
    def summary(**style):
        mel, power = log_mel(render(TrackStyle(seconds=10.0, intro_bars=0, seed=1, **style)), PARAMS)
        return summary_vector(mel, power, PARAMS)

    dark, bright = summary(brightness=0.1), summary(brightness=0.9)
    assert bright[59] > dark[59] * 1.2            # spectral centroid
    quiet, loud = summary(loudness_db=-22), summary(loudness_db=-10)
    assert loud[61] - quiet[61] > 8               # loudness in dB


def test_tempo_estimate_on_a_click_track():
    sr, hop = 22050, 512
    onset = np.zeros(1292)
    onset[:: int(round(60 / 120 * sr / hop))] = 1.0  # 120 BPM
    assert estimate_tempo(onset, sr, hop) == pytest.approx(120, rel=0.05)
    assert estimate_tempo(np.zeros(100), sr, hop) == 0.0


def test_mel_round_trip():
    mel = np.linspace(-80, 0, 128 * 10, dtype=np.float32).reshape(128, 10)
    data, shape = encode_mel(mel)
    assert shape == [128, 10] and np.allclose(decode_mel(data, shape), mel, atol=0.05)
