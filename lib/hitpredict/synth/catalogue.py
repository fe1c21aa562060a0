"""A synthetic catalogue: N tracks by M artists, real MP3 files, and a planted popularity.

Each artist has a region and a house style (tempo, key, swing, brightness,
loudness); each track varies around its artist's style. Popularity depends on the
audio in a known way plus noise:

    popularity = clip(40 + 40 * (brightness - 0.5) + 2.5 * (loudness_db + 14)
                      + artist_effect + noise, 0, 100)

with ``artist_effect ~ N(0, 4)`` per artist and ``noise ~ N(0, noise_sd)`` per track.
So a model that hears brightness and loudness can learn popularity, a test can
check it did, and ``artist``/``region`` labels are learnable from tempo and swing.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from hitpredict.progress import Progress
from hitpredict.synth.music import TrackStyle, render, write_audio

log = logging.getLogger(__name__)

#: Region -> (tempo range in BPM, swing range): what makes a region audible.
REGIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "East Coast": ((86.0, 96.0), (0.20, 0.35)),
    "West Coast": ((92.0, 104.0), (0.00, 0.10)),
    "South": ((130.0, 150.0), (0.00, 0.08)),
    "Midwest": ((150.0, 170.0), (0.10, 0.25)),
}
_FIRST = ["Lil", "Big", "Young", "MC", "DJ", "Yung", "King", "Lady", "Saint", "Baby"]
_LAST = ["Nova", "Kite", "Ghost", "Onyx", "Rell", "Juno", "Vapor", "Dice", "Rook", "Sable",
         "Mint", "Orbit", "Flux", "Haze", "Ivory", "Jett", "Lumen", "Mako", "Nyx", "Pike"]
_WORDS = ["Midnight", "Gold", "Rain", "City", "Fever", "Echo", "Neon", "Summer", "Ghost", "Crown",
          "Drift", "Shadow", "Velvet", "Signal", "Static", "Paper", "Glass", "Engine", "Halo", "River"]


def popularity_signal(brightness: float | np.ndarray, loudness_db: float | np.ndarray) -> float | np.ndarray:
    """The noiseless, audio-driven part of the planted popularity."""
    return 40 + 40 * (np.asarray(brightness) - 0.5) + 2.5 * (np.asarray(loudness_db) + 14)


@dataclass(frozen=True)
class Artist:
    """A generated artist: the style its tracks share and its own popularity offset."""

    name: str
    region: str
    tempo_bpm: float
    swing: float
    key: int
    minor: bool
    brightness: float
    loudness_db: float
    effect: float  # the artist's own popularity offset ("star power")


@dataclass(frozen=True)
class SyntheticTrack:
    """One row of the catalogue, with the style it was rendered from."""

    track_id: str
    title: str
    artist: str
    region: str
    isrc: str
    release_date: str
    audio_file: str  # file name inside the catalogue's audio folder
    popularity: float
    streams: int
    style: TrackStyle


def make_artists(count: int, rng: np.random.Generator) -> list[Artist]:
    """``count`` artists with distinct names, spread over the regions."""
    names: list[str] = []
    for i in range(count):
        name = f"{_FIRST[i % len(_FIRST)]} {_LAST[(i // len(_FIRST) + 3 * i) % len(_LAST)]}"
        names.append(name if name not in names else f"{name} {i}")
    regions = list(REGIONS)
    artists = []
    for i, name in enumerate(names):
        region = regions[i % len(regions)]
        (t_lo, t_hi), (s_lo, s_hi) = REGIONS[region]
        artists.append(Artist(
            name=name,
            region=region,
            tempo_bpm=float(rng.uniform(t_lo, t_hi)),
            swing=float(rng.uniform(s_lo, s_hi)),
            key=int(rng.integers(0, 12)),
            minor=bool(rng.random() < 0.6),
            brightness=float(rng.uniform(0.2, 0.8)),
            loudness_db=float(rng.uniform(-18, -10)),
            effect=float(rng.normal(0, 4)),
        ))
    return artists


def make_catalogue(
    tracks: int, artists: int, seed: int = 7, seconds: float = 30.0, noise_sd: float = 5.0,
) -> list[SyntheticTrack]:
    """Plan a catalogue (no audio yet): deterministic in its arguments."""
    if tracks < 1 or artists < 1:
        raise ValueError(f"need at least one track and one artist, got tracks={tracks}, artists={artists}")
    rng = np.random.default_rng(seed)
    roster = make_artists(artists, rng)
    rows = []
    for i in range(tracks):
        artist = roster[i % len(roster)] if i < len(roster) else roster[int(rng.integers(0, len(roster)))]
        style = TrackStyle(
            tempo_bpm=float(np.clip(artist.tempo_bpm + rng.normal(0, 2.5), 50, 200)),
            key=int((artist.key + rng.choice([0, 0, 0, 5, 7])) % 12),
            minor=artist.minor if rng.random() < 0.8 else not artist.minor,
            swing=float(np.clip(artist.swing + rng.normal(0, 0.03), 0, 0.5)),
            brightness=float(np.clip(artist.brightness + rng.normal(0, 0.15), 0, 1)),
            loudness_db=float(np.clip(artist.loudness_db + rng.normal(0, 2.5), -24, -6)),
            seconds=seconds,
            intro_bars=int(rng.integers(0, 3)),
            seed=int(seed * 1_000_003 + i),
        )
        popularity = float(np.clip(
            popularity_signal(style.brightness, style.loudness_db) + artist.effect + rng.normal(0, noise_sd), 0, 100
        ))
        track_id = f"syn{seed:03d}-{i:06d}"
        rows.append(SyntheticTrack(
            track_id=track_id,
            title=f"{_WORDS[int(rng.integers(0, len(_WORDS)))]} {_WORDS[int(rng.integers(0, len(_WORDS)))]}",
            artist=artist.name,
            region=artist.region,
            isrc=f"QZHP{seed % 10}26{i % 100_000:05d}",  # CC + registrant + year + designation
            release_date=(date(2018, 1, 1) + timedelta(days=int(rng.integers(0, 3000)))).isoformat(),
            audio_file=f"{track_id}.mp3",
            popularity=round(popularity, 2),
            streams=int(10 ** (2 + popularity / 20) * rng.uniform(0.5, 1.5)),
            style=style,
        ))
    return rows


def _render_one(args: tuple[TrackStyle, str, int, int]) -> int:
    style, path, sample_rate, channels = args
    tmp = f"{path}.part.mp3"
    write_audio(tmp, render(style, sample_rate), sample_rate, "MP3", channels)
    os.replace(tmp, path)  # never leave a half-written MP3 under the final name
    return os.path.getsize(path)


def render_catalogue(
    rows: Sequence[SyntheticTrack], audio_dir: str | os.PathLike[str], sample_rate: int = 22050,
    workers: int | None = None, channels: int = 1, progress_interval_s: float | None = None,
    progress_bar: bool | None = None,
) -> int:
    """Write each row's MP3 into ``audio_dir`` (skipping files already there); returns how many were written.

    Progress per track (:class:`~hitpredict.progress.Progress`: a bar on a terminal, else a line every
    ``progress_interval_s`` seconds, default :func:`~hitpredict.progress.default_interval_s`).
    """
    audio_dir = Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    todo = [(r.style, str(audio_dir / r.audio_file), sample_rate, channels) for r in rows
            if not (audio_dir / r.audio_file).exists()]
    if not todo:
        return 0
    workers = workers or min(len(todo), os.cpu_count() or 1)
    done = 0
    if workers == 1:
        results: Iterable[int] = map(_render_one, todo)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_render_one, todo, chunksize=4)
    try:
        with Progress("generate_sample", len(todo), "tracks", interval_s=progress_interval_s, bar=progress_bar,
                      logger=log) as progress:
            for done, _ in enumerate(results, start=1):
                progress.update()
    finally:
        if workers != 1:
            pool.shutdown()
    return done


CSV_COLUMNS = ["track_id", "title", "artists", "isrc", "release_date", "audio_uri", "preview_url",
               "popularity", "streams", "region", "genre"]


def write_catalogue_csv(
    rows: Sequence[SyntheticTrack], path: str | os.PathLike[str], audio_dir: str | os.PathLike[str],
    preview_base_url: str | None = None, include_audio_uri: bool = True,
) -> Path:
    """Write a label-style catalogue CSV.

    ``audio_uri`` points at the local MP3 (left empty with ``include_audio_uri=False``);
    with ``preview_base_url`` the rows also carry a ``preview_url`` (``<base>/<file>``)
    as a label's preview links would.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio_dir = Path(audio_dir).resolve()
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({
                "track_id": r.track_id, "title": r.title, "artists": r.artist, "isrc": r.isrc,
                "release_date": r.release_date,
                "audio_uri": str(audio_dir / r.audio_file) if include_audio_uri else "",
                "preview_url": f"{preview_base_url.rstrip('/')}/{r.audio_file}" if preview_base_url else "",
                "popularity": r.popularity, "streams": r.streams, "region": r.region, "genre": "hip hop",
            })
    return path


def write_truth(rows: Sequence[SyntheticTrack], path: str | os.PathLike[str]) -> Path:
    """The generation parameters of every track (JSON lines), for tests and analysis."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as handle:
        for r in rows:
            record = {k: v for k, v in asdict(r).items() if k != "style"}
            handle.write(json.dumps({**record, **r.style.as_dict()}) + "\n")
    return path


@dataclass(frozen=True)
class SampleCatalogue:
    """A generated catalogue on disk."""

    root: Path
    rows: tuple[SyntheticTrack, ...]

    @property
    def audio_dir(self) -> Path:
        """The folder of the generated audio files."""
        return self.root / "audio"

    @property
    def csv_path(self) -> Path:
        """The catalogue CSV written beside the audio."""
        return self.root / "catalogue.csv"


def ensure_sample_catalogue(
    root: str | os.PathLike[str], tracks: int, artists: int, seed: int = 7, seconds: float = 30.0,
    sample_rate: int = 22050, workers: int | None = None, channels: int = 1,
    progress_interval_s: float | None = None, progress_bar: bool | None = None,
) -> SampleCatalogue:
    """Generate the catalogue under ``root`` unless an identical one is already there.

    Writes ``audio/<track_id>.mp3``, ``catalogue.csv``, ``truth.jsonl`` and a
    ``manifest.json`` keyed by the arguments, so a second call is free. ``progress_*``: see
    :func:`render_catalogue`.
    """
    root = Path(root)
    params = {"tracks": tracks, "artists": artists, "seed": seed, "seconds": seconds, "sample_rate": sample_rate,
              "channels": channels}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    manifest = root / "manifest.json"
    rows = tuple(make_catalogue(tracks, artists, seed=seed, seconds=seconds))
    sample = SampleCatalogue(root, rows)
    same_params = manifest.exists() and json.loads(manifest.read_text()).get("key") == key
    if same_params and sample.csv_path.exists():
        if all((sample.audio_dir / r.audio_file).exists() for r in rows):
            log.info("sample catalogue up to date at %s (%d tracks)", root, len(rows))
            return sample
    elif sample.audio_dir.exists():
        for stale in sample.audio_dir.glob("*.mp3"):  # rendered with other parameters
            stale.unlink()
    started = time.monotonic()
    written = render_catalogue(rows, sample.audio_dir, sample_rate=sample_rate, workers=workers, channels=channels,
                               progress_interval_s=progress_interval_s, progress_bar=progress_bar)
    write_catalogue_csv(rows, sample.csv_path, sample.audio_dir)
    write_truth(rows, root / "truth.jsonl")
    manifest.write_text(json.dumps({"key": key, **params}, indent=2))
    log.info("sample catalogue: %d tracks by %d artists at %s (%d rendered in %.0fs)",
             len(rows), artists, root, written, time.monotonic() - started)
    return sample
