"""The real-audio benchmark's catalogue: 30 s clips of game music from Debian packages, one class per package.

``bench/real_audio.py`` downloads and unpacks the packages; this module (no network, no Spark) finds
their music, cuts the clips and writes the label-style CSV that hitpredict ingests. It is what
``tests/test_real_audio_builder.py`` checks on generated files.

The rules, fixed so reruns compare:

- **Music.** Every file under a package's unpacked folder whose first bytes hitpredict's decoder
  recognises (``hitpredict.audio.sniff_audio``: MP3, OGG Vorbis/Opus, FLAC, WAV), whatever its name,
  read with libsndfile as hitpredict reads it, longer than ``MIN_TRACK_S`` (45 s): the length rule
  is what separates music from sound effects and voices. Files of identical bytes are one track (the
  first path in sorted order). Tracker modules (.it, .s3m, .xm, .mod: pingus-data's music) are not
  audio hitpredict can decode: they are counted, not used.
- **Clips.** Non-overlapping ``CLIP_S`` (30 s) clips from the start of the track, at 0 s, 30 s,
  60 s, ... while a whole clip fits, at most ``MAX_CLIPS_PER_TRACK`` (4) per track, so one long
  track does not dominate its class. Each clip is the source downmixed to mono (channel mean) and
  resampled to 22,050 Hz (soxr HQ, hitpredict's own resampler), written as 16-bit FLAC.
- **CSV.** One row per clip: ``audio_uri`` (relative to the CSV's folder), ``title``, ``artists``
  (the source track, ``<package>/<path in the package>``: every clip of one recording shares it) and
  ``region`` (the package: the class). Train with ``dataset.target: region``: its labelling rule
  (``dataset.label_region``) takes the class from ``region`` and groups the split by the primary
  artist, so no recording has clips in two splits.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from hitpredict.audio import sniff_audio

#: The packages, as the issue names them; each one is a class.
PACKAGES: tuple[str, ...] = (
    "frozen-bubble-data", "pingus-data", "lincity-ng-data", "hedgewars-data", "neverball-data",
    "marsshooter-data", "supertux-data", "freedroidrpg-data", "warzone2100-music", "extremetuxracer-data",
)
#: Packages whose music ships in a package they depend on: neverball-data holds maps and textures,
#: and Neverball's music (``bgm/``) is in neverball-common. The class keeps the issue's name.
COMPANIONS: dict[str, tuple[str, ...]] = {"neverball-data": ("neverball-common",)}
#: Only tracks longer than this (seconds) are music here; shorter files are effects and voices.
MIN_TRACK_S = 45.0
#: Clip length (seconds): hitpredict's analysis window.
CLIP_S = 30.0
#: At most this many clips per source track.
MAX_CLIPS_PER_TRACK = 4
#: Sample rate of the written clips (Hz), hitpredict's analysis rate.
CLIP_RATE = 22050
#: Music file kinds hitpredict cannot decode, counted by extension when a package holds them.
TRACKER_EXTENSIONS = (".it", ".s3m", ".xm", ".mod")
#: Formats read here: those hitpredict decodes with libsndfile (AAC/M4A go through PyAV there).
_SOUNDFILE_CODECS = ("mp3", "ogg", "flac", "wav")


@dataclass(frozen=True)
class Track:
    """One source recording: its class (``package``), where it is, its length and content hash."""

    package: str
    path: Path
    name: str          # <package>/<path inside the unpacked package>: the grouping key
    seconds: float
    sha256: str


@dataclass(frozen=True)
class Clip:
    """One 30 s clip of a track: the CSV row it becomes."""

    package: str
    track: str         # Track.name
    start_s: float
    file: str          # relative to the catalogue folder


@dataclass
class Found:
    """What :func:`find_tracks` kept of one package, and what it left out, by reason."""

    tracks: list[Track] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        """Count one file left out for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass
class Catalogue:
    """The built catalogue: the CSV, its clips in row order, and per package what was found."""

    csv_path: Path
    clips: list[Clip]
    found: dict[str, Found]

    def clips_per_class(self) -> dict[str, int]:
        """Clips per package, every package listed (0 when none of its files is usable music)."""
        counts = {p: 0 for p in self.found}
        for clip in self.clips:
            counts[clip.package] += 1
        return counts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_tracks(package: str, roots: Sequence[Path], min_track_s: float = MIN_TRACK_S) -> Found:
    """The music of one package: every decodable audio file under ``roots`` (unpacked package folders)
    longer than ``min_track_s`` seconds, in sorted path order, identical files once.

    Files are recognised by their first bytes, not their names. Left-out files are counted in
    ``Found.skipped``: ``short`` (at most ``min_track_s``), ``tracker_module`` (.it/.s3m/.xm/.mod),
    ``unreadable`` (recognised but libsndfile fails), ``duplicate`` (same bytes as a kept track),
    ``not_supported`` (AAC/M4A, which only PyAV decodes). Other files (images, maps) are not counted.
    """
    import soundfile as sf

    found = Found()
    seen: set[str] = set()
    for root in roots:
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink()):
            if path.suffix.lower() in TRACKER_EXTENSIONS:
                found.skip("tracker_module")
                continue
            with open(path, "rb") as handle:
                head = handle.read(4096)
            codec = sniff_audio(head)
            if codec is None:
                continue
            if codec not in _SOUNDFILE_CODECS:
                found.skip("not_supported")
                continue
            try:
                info = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError):
                found.skip("unreadable")
                continue
            seconds = info.frames / info.samplerate if info.samplerate else 0.0
            if seconds <= min_track_s:
                found.skip("short")
                continue
            digest = _sha256(path)
            if digest in seen:
                found.skip("duplicate")
                continue
            seen.add(digest)
            # the name is the track's "artist": ingest splits artists at ";"
            name = f"{package}/{path.relative_to(root).as_posix()}".replace(";", "_")
            found.tracks.append(Track(package, path, name, float(seconds), digest))
    return found


def clip_starts(seconds: float, clip_s: float = CLIP_S, max_clips: int = MAX_CLIPS_PER_TRACK) -> list[float]:
    """Start times (s) of the clips of a ``seconds``-long track: 0, ``clip_s``, 2 ``clip_s``, ... while a
    whole clip fits, at most ``max_clips``."""
    count = min(max_clips, int(np.floor(seconds / clip_s + 1e-9)))
    return [k * clip_s for k in range(count)]


def cut_clip(path: Path, start_s: float, clip_s: float = CLIP_S, rate: int = CLIP_RATE) -> np.ndarray:
    """``clip_s`` seconds of ``path`` from ``start_s``: float32 mono (channel mean) at ``rate`` Hz,
    shape (round(clip_s * rate),)."""
    import soundfile as sf
    import soxr

    with sf.SoundFile(str(path)) as handle:
        source_rate = handle.samplerate
        handle.seek(int(round(start_s * source_rate)))
        frames = handle.read(int(round(clip_s * source_rate)), dtype="float32", always_2d=True)
    mono = frames.mean(axis=1)
    if source_rate != rate:
        mono = soxr.resample(mono, source_rate, rate, quality="HQ")
    want = int(round(clip_s * rate))
    mono = np.asarray(mono[:want], dtype=np.float32)
    return np.pad(mono, (0, want - len(mono)))


def clip_file_name(track: str, start_s: float) -> str:
    """The clip's file name: the track's path made safe, a short hash of it (two paths that make the
    same safe name stay apart) and the start second: ``Music__Castle.ogg-1a2b3c4d__0030s.flac``."""
    inside = track.split("/", 1)[1] if "/" in track else track
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", inside.replace("/", "__"))[-80:]
    tag = hashlib.sha256(track.encode()).hexdigest()[:8]
    return f"{safe}-{tag}__{int(round(start_s)):04d}s.flac"


def build_catalogue(packages: Mapping[str, Sequence[Path]], out_dir: Path, *, min_track_s: float = MIN_TRACK_S,
                    clip_s: float = CLIP_S, max_clips: int = MAX_CLIPS_PER_TRACK, rate: int = CLIP_RATE) -> Catalogue:
    """Cut the clips of every package's music into ``out_dir/clips/<package>/`` and write
    ``out_dir/catalogue.csv`` (columns ``audio_uri``, ``title``, ``artists``, ``region``, ``clip_start_s``).

    ``packages`` maps a class (package name) to its unpacked folders. Clips already written are kept
    (a rerun re-cuts nothing); rows are in package, track, start order, so the same inputs give the
    same CSV.
    """
    import soundfile as sf

    out_dir = Path(out_dir)
    clips: list[Clip] = []
    found_all: dict[str, Found] = {}
    for package in sorted(packages):
        found = find_tracks(package, packages[package], min_track_s)
        found_all[package] = found
        folder = out_dir / "clips" / package
        for track in found.tracks:
            for start in clip_starts(track.seconds, clip_s, max_clips):
                target = folder / clip_file_name(track.name, start)
                if not target.exists():
                    folder.mkdir(parents=True, exist_ok=True)
                    partial = target.with_name(target.name + ".part")
                    sf.write(str(partial), cut_clip(track.path, start, clip_s, rate), rate, format="FLAC",
                             subtype="PCM_16")
                    os.replace(partial, target)
                clips.append(Clip(package, track.name, start, target.relative_to(out_dir).as_posix()))
    csv_path = out_dir / "catalogue.csv"
    write_csv(clips, csv_path)
    return Catalogue(csv_path, clips, found_all)


def write_csv(clips: Iterable[Clip], path: Path) -> Path:
    """The label-style catalogue hitpredict ingests: one row per clip (see the module's docstring)."""
    partial = path.with_name(path.name + ".part")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio_uri", "title", "artists", "region", "clip_start_s"])
        for clip in clips:
            title = f"{clip.track.rsplit('/', 1)[-1]} @ {clip.start_s:g} s"
            writer.writerow([clip.file, title, clip.track, clip.package, f"{clip.start_s:g}"])
    os.replace(partial, path)
    return path
