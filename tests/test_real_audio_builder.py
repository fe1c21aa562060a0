"""The real-audio benchmark's builder (bench/real_audio_catalogue.py) on small generated audio files:
which files count as music, the >45 s rule, the clip positions and content, the CSV and its grouping
column. No network, no Spark: the download and the pipeline run only in bench/real_audio.py."""
from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from hitpredict.audio import decode_clip
from hitpredict.config import DatasetConfig
from hitpredict.dataset import label_examples
from hitpredict.synth.music import WRITE_BLOCK_FRAMES

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("real_audio_catalogue", BENCH / "real_audio_catalogue.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["real_audio_catalogue"] = module
    spec.loader.exec_module(module)
    return module


RATE = 8000   # small files; the clips are resampled to 22,050 Hz like real ones


def tone(seconds: float, freq: float, channels: int = 1) -> np.ndarray:
    """A sine whose frequency steps up by 10 Hz every second, so each second is recognisable."""
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * (freq + 10 * np.floor(t)) * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write(path: Path, samples: np.ndarray, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = samples.shape[1] if samples.ndim == 2 else 1
    with sf.SoundFile(str(path), "w", RATE, channels, format=fmt) as handle:
        for start in range(0, len(samples), WRITE_BLOCK_FRAMES):   # one call per clip can crash libvorbis
            handle.write(samples[start:start + WRITE_BLOCK_FRAMES])
    return path


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, list[Path]]:
    """Two unpacked "packages" with music, effects, a tracker module, a duplicate and non-audio files."""
    root = tmp_path_factory.mktemp("unpacked")
    a, b = root / "game-a-data", root / "game-b-data"
    write(a / "usr/share/game-a/music/long.ogg", tone(150, 220, channels=2), "OGG")      # 4 clips (cap)
    write(a / "usr/share/game-a/music/medium.wav", tone(70, 330), "WAV")                 # 2 clips
    write(a / "usr/share/game-a/music/no_extension", tone(50, 440), "FLAC")              # 1 clip, found by bytes
    write(a / "usr/share/game-a/sounds/jump.wav", tone(2, 880), "WAV")                   # effect: short
    write(a / "usr/share/game-a/music/intro.ogg", tone(45, 550), "OGG")                  # exactly 45 s: short
    (a / "usr/share/game-a/music/song.it").write_bytes(b"IMPM" + bytes(200))              # tracker module
    (a / "usr/share/game-a/readme.txt").write_text("not audio\n")
    write(b / "usr/share/game-b/bgm/theme.flac", tone(100, 260), "FLAC")                 # 3 clips
    (b / "usr/share/game-b/bgm/copy-of-theme.flac").write_bytes(
        (b / "usr/share/game-b/bgm/theme.flac").read_bytes())                             # same bytes: once
    return {"game-a-data": [a], "game-b-data": [b]}


def test_music_is_every_decodable_file_longer_than_45_s(builder, packages):
    found = builder.find_tracks("game-a-data", packages["game-a-data"])
    names = [t.name for t in found.tracks]
    assert names == ["game-a-data/usr/share/game-a/music/long.ogg", "game-a-data/usr/share/game-a/music/medium.wav",
                     "game-a-data/usr/share/game-a/music/no_extension"]
    assert [round(t.seconds) for t in found.tracks] == [150, 70, 50]
    assert found.skipped == {"short": 2, "tracker_module": 1}
    b = builder.find_tracks("game-b-data", packages["game-b-data"])
    assert [t.name for t in b.tracks] == ["game-b-data/usr/share/game-b/bgm/copy-of-theme.flac"]   # sorted first
    assert b.skipped == {"duplicate": 1}


@pytest.mark.parametrize("seconds, starts", [(45.5, [0.0]), (59.9, [0.0]), (60.0, [0.0, 30.0]),
                                             (89.0, [0.0, 30.0]), (600.0, [0.0, 30.0, 60.0, 90.0])])
def test_clips_are_non_overlapping_from_the_start_and_capped(builder, seconds, starts):
    assert builder.clip_starts(seconds) == starts
    assert builder.clip_starts(600.0, max_clips=6) == [30.0 * k for k in range(6)]


def test_a_clip_is_the_right_30_seconds_downmixed_and_resampled(builder, packages):
    source = packages["game-a-data"][0] / "usr/share/game-a/music/long.ogg"
    clip = builder.cut_clip(source, 60.0)
    assert clip.dtype == np.float32 and clip.shape == (30 * 22050,)
    # second 0 of the clip is second 60 of the track: a 220 + 600 = 820 Hz tone; second 29 is 1110 Hz
    for second, freq in ((0, 820), (29, 1110)):
        part = clip[second * 22050 + 2000:(second + 1) * 22050 - 2000]
        spectrum = np.abs(np.fft.rfft(part))
        assert np.fft.rfftfreq(len(part), 1 / 22050)[spectrum.argmax()] == pytest.approx(freq, abs=2)


def test_the_catalogue_csv_and_its_clips(builder, packages, tmp_path):
    built = builder.build_catalogue(packages, tmp_path / "catalogue")
    assert built.clips_per_class() == {"game-a-data": 7, "game-b-data": 3}
    with open(built.csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["audio_uri", "title", "artists", "region", "clip_start_s"]
    assert [(r["region"], r["artists"].rsplit("/", 1)[1], r["clip_start_s"]) for r in rows] == [
        ("game-a-data", "long.ogg", "0"), ("game-a-data", "long.ogg", "30"), ("game-a-data", "long.ogg", "60"),
        ("game-a-data", "long.ogg", "90"), ("game-a-data", "medium.wav", "0"), ("game-a-data", "medium.wav", "30"),
        ("game-a-data", "no_extension", "0"),
        ("game-b-data", "copy-of-theme.flac", "0"), ("game-b-data", "copy-of-theme.flac", "30"),
        ("game-b-data", "copy-of-theme.flac", "60")]
    assert len({r["audio_uri"] for r in rows}) == 10
    for row in rows:   # relative to the CSV's folder, and hitpredict decodes every clip to a full window
        path = built.csv_path.parent / row["audio_uri"]
        assert not Path(row["audio_uri"]).is_absolute() and path.is_file()
        decoded = decode_clip(path.read_bytes())
        assert decoded.codec == "flac" and decoded.source_rate == 22050 and decoded.duration_s == pytest.approx(30)
    # a rerun re-cuts nothing and writes the same CSV
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "catalogue" / "clips").rglob("*.flac")}
    text = built.csv_path.read_text()
    again = builder.build_catalogue(packages, tmp_path / "catalogue")
    assert again.csv_path.read_text() == text
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "catalogue" / "clips").rglob("*.flac")} == before


def test_the_region_target_learns_the_package_and_keeps_each_recording_in_one_split(builder, tmp_path):
    """What ingest stores from the CSV (artists -> primary_artist, region), labelled by hitpredict's own rule."""
    clips = [builder.Clip(f"pkg-{p}", f"pkg-{p}/track-{t}.ogg", 30.0 * k, f"clips/{p}-{t}-{k}.flac")
             for p in range(3) for t in range(8) for k in range(4)]
    path = builder.write_csv(clips, tmp_path / "catalogue.csv")
    rows = pd.read_csv(path, dtype=str)
    keys = pd.DataFrame({"track_id": [f"id{i:03d}" for i in range(len(rows))], "audio_sha256": rows["audio_uri"],
                         "primary_artist": rows["artists"], "region": rows["region"], "popularity": None,
                         "popularity_source": None})
    labelled, meta = label_examples(keys, DatasetConfig(target="region", seed=13), (128, 1292))
    assert meta["label_names"] == ["pkg-0", "pkg-1", "pkg-2"]
    assert (labelled["label_name"] == labelled["region"]).all()
    splits_per_track = labelled.groupby("primary_artist")["split"].nunique()
    assert len(splits_per_track) == 24 and (splits_per_track == 1).all()
    assert set(labelled["split"]) == {"train", "validation", "test"}
