"""``ingest --source spotify``: a crawl fanned out over Spark with its progress in ``crawl_state``
(resumed after an outage to the same rows), artist-list and playlist crawls, previews filled from
the Deezer and iTunes fakes, counts printed, and the secret in no output of the run."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from hitpredict.config import LakeConfig, load_config
from hitpredict.fanouts.spotify_crawl import CrawlRequest, crawl
from hitpredict.lake import DeltaRsLake
from hitpredict.sources.spotify import SpotifyError
from hitpredict.testing.music_apis import FakeTrack, MusicApiServer
from hitpredict.testing.spotify_api import SpotifyApiServer, sample_artists

ROOT = Path(__file__).resolve().parents[1]
CLIENT_ID, SECRET = "ingest-client-id", "s3cr3t-ingest-Xv93-never-printed"
CREDENTIALS = {"SPOTIPY_CLIENT_ID": CLIENT_ID, "SPOTIPY_CLIENT_SECRET": SECRET}
ADJECTIVES = ["amber", "broken", "cosmic", "dusty", "electric", "frozen", "golden", "hollow", "iron", "jaded",
              "kinetic", "lunar"]
NOUNS = ["river", "rocket", "garden", "engine", "harbor", "mirror", "canyon", "signal", "meadow", "tunnel",
         "lantern", "circuit"]


def spotify_sets(server: SpotifyApiServer) -> list[str]:
    return [f"spotify.api_url={server.base_url}/v1/", f"spotify.token_url={server.base_url}/api/token",
            "spotify.first_year=2020", "spotify.last_year=2021", "spotify.backoff_factor=0", "spotify.retries=1",
            "spotify.commit_every=4"]


def crawl_config(server: SpotifyApiServer):
    return load_config(None, spotify_sets(server), environ=CREDENTIALS)


def new_lake(spark, path: Path) -> DeltaRsLake:
    return DeltaRsLake(LakeConfig(engine="delta-rs", root=str(path)), spark)


@pytest.mark.parametrize("ok_calls, retry_after", [(2, None), (40, None), (40, 12_471)],
                         ids=["outage-in-search", "outage-in-albums", "retry-after-of-hours-in-albums"])
def test_a_resumed_crawl_gives_the_same_table_as_an_uninterrupted_one(spark, tmp_path, ok_calls, retry_after):
    request = CrawlRequest(genre="hip hop")
    with SpotifyApiServer(sample_artists(), CLIENT_ID, SECRET) as server:
        config = load_config(None, [*spotify_sets(server), "lake.compact_min_files=8"], environ=CREDENTIALS)
        whole = crawl(config, spark, new_lake(spark, tmp_path / "whole"), request)
        full_calls = server.calls["api"]
        lake = new_lake(spark, tmp_path / "resumed")
        server.down_after(ok_calls, retry_after)       # 503s, or 429s asking to wait hours
        started = time.monotonic()
        with pytest.raises(SpotifyError, match="run the same command again to resume") as stopped:
            crawl(config, spark, lake, request)
        assert ("503" if retry_after is None else "asks to wait 12471 s (Retry-After), more than spotify.max_wait_s") \
            in str(stopped.value) and "\n" not in str(stopped.value)
        assert time.monotonic() - started < 120          # not one Retry-After waited out
        saved = lake.read("crawl_state").count()
        server.up()
        before = server.calls["api"]
        resumed = crawl(config, spark, lake, request)
        resumed_calls = server.calls["api"] - before
        before = server.calls["api"]
        third = crawl(config, spark, lake, request)
        assert server.calls["api"] == before               # everything was in crawl_state: no call at all
        weekly = crawl(config, spark, lake, CrawlRequest(genre="hip hop", tag="2026-11-29"))
        assert server.calls["api"] - before == full_calls  # a new tag crawls afresh
    assert 0 < saved and resumed.units_resumed == saved and resumed.units_crawled > 0
    assert resumed_calls < full_calls
    assert whole.units_crawled == saved + resumed.units_crawled
    pd.testing.assert_frame_equal(resumed.rows, whole.rows)
    pd.testing.assert_frame_equal(third.rows, whole.rows)
    assert third.units_crawled == 0
    pd.testing.assert_frame_equal(weekly.rows, whole.rows)
    assert (weekly.units_resumed, weekly.units_crawled) == (0, whole.units_crawled)
    runs = [json.loads(p) for p in lake.read("crawl_state").where("level = 'run' and crawl_id = 'genre:hip hop'")
            .orderBy("unit").toPandas()["payload"]]
    assert [(r["tracks"], r["units_resumed"], r["crawl"]) for r in runs] == [
        (90, saved, "genre:hip hop"), (90, whole.units_crawled, "genre:hip hop")]
    for stats in (resumed.stats, third.stats):
        assert (stats.artists, stats.albums, stats.tracks_seen, stats.duplicate_ids, stats.duplicate_isrcs) == (
            whole.stats.artists, whole.stats.albums, whole.stats.tracks_seen, 1, 1)
    assert len(whole.rows) == 90 and whole.stats.artists == 15 and whole.stats.albums == 30
    # Commits of 4 units leave many small files: each crawl compacted them (later crawls read the result).
    operations = [h["operation"] for h in DeltaTable(lake.location("crawl_state")).history()]
    assert operations.count("OPTIMIZE") >= 2 and lake.describe("crawl_state").files <= 2


def test_artist_list_and_playlist_crawls(spark, lake):
    artists = sample_artists()
    playlist = ["tr00000", "tr00102", "tr00000", "tr00211"]
    with SpotifyApiServer(artists, CLIENT_ID, SECRET, playlists={"pl7xq": playlist},
                          unreadable_playlists={"plOthers"}) as server:
        config = crawl_config(server)
        by_artist = crawl(config, spark, lake, CrawlRequest(artists=(
            "spotify:artist:ar000", artists[1].name.upper(), "Nobody By This Name")))
        listed = crawl(config, spark, lake, CrawlRequest(playlist="https://open.spotify.com/playlist/pl7xq?si=abc"))
        refusals = {}
        for ref in ("spotify:playlist:plOthers", "37i9dQZF1DXcBWIGoYBM5M"):
            with pytest.raises(SpotifyError) as refused:
                crawl(config, spark, lake, CrawlRequest(playlist=ref))
            refusals[refused.value.http_status] = str(refused.value)
    assert refusals[403].startswith(f"spotify: HTTP 403 from {server.base_url}/v1/playlists/plOthers/items?")
    assert refusals[403].endswith(
        "additional_types=track: playlist plOthers is not readable by this app (since 2026 Development-Mode "
        "apps read only playlists their user owns or follows; extended access lifts this)")
    assert "playlist 37i9dQZF1DXcBWIGoYBM5M does not exist or is not served to this app (private, or a " \
           "Spotify-owned editorial" in refusals[404]
    assert all("\n" not in text and SECRET not in text for text in refusals.values())
    assert by_artist.missing_artists == ["Nobody By This Name"]
    assert by_artist.stats.artists == 2 and by_artist.stats.albums == 4
    assert sorted(by_artist.rows["track_id"].str[-5:-2].unique()) == ["000", "001"] and len(by_artist.rows) == 12
    assert list(listed.rows["track_id"]) == ["spotify:tr00000", "spotify:tr00102", "spotify:tr00211"]
    assert listed.stats.duplicate_ids == 1 and listed.rows["preview_url"].notna().all()
    assert set(lake.read("crawl_state").toPandas()["level"]) == {"artist_ref", "artist", "album", "playlist", "run"}
    with pytest.raises(SpotifyError, match="exactly one of --genre, --artists or --playlist"):
        CrawlRequest(genre="hip hop", playlist="pl7xq")


def renamed_world():
    """The sample artists with distinct track titles (search must not confuse two songs) and, for
    Deezer and iTunes, each kept track: 0-6 of every 10 on Deezer by ISRC, 7-8 on iTunes only and
    found by search, 9 nowhere."""
    artists = sample_artists()
    tracks = sorted({t.id: (a, t) for a in artists for al in a.albums for t in al.tracks}.items())
    music = []
    for n, (track_id, (artist, track)) in enumerate(tracks):
        track.name = f"{ADJECTIVES[n % 12].title()} {NOUNS[(n // 12) % 12].title()}"
        kind = n % 10
        if track_id == "trreissue":
            continue
        music.append(FakeTrack(n + 1, track.name, artist.name, track.isrc, f"https://cdn.test/{track_id}.mp3",
                               rank=(n + 1) * 9_000, on_deezer=kind < 7, on_itunes=kind in (7, 8),
                               isrc_known=kind < 7))
    return artists, music


def test_ingest_spotify_genre_fills_previews_from_deezer_and_itunes_and_never_shows_the_secret(tmp_path):
    artists, music = renamed_world()
    with SpotifyApiServer(artists, CLIENT_ID, SECRET, restricted=True) as spotify, MusicApiServer(music) as apis:
        args = [sys.executable, "-m", "hitpredict.cli", "ingest", "--source", "spotify", "--genre", "hip hop", "-v",
                "--set", f"lake.root={tmp_path / 'lakehouse'}", "--set", f"resolve.deezer_url={apis.base_url}/deezer",
                "--set", f"resolve.itunes_url={apis.base_url}/itunes", "--set", "resolve.backoff_base_s=0",
                "--set", "resolve.itunes_calls_per_minute=0"]     # the fake does not throttle: no pacing
        for item in spotify_sets(spotify):
            args += ["--set", item]
        env = {**os.environ, **CREDENTIALS, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
               "SPARK_LOCAL_IP": "127.0.0.1"}
        first = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        calls = spotify.calls["api"]
        second = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
        assert second.returncode == 0, second.stderr[-3000:]
        assert spotify.calls["api"] == calls                 # the crawl came from crawl_state
        tokens = list(spotify.tokens)
    kept = len(music)
    deezer, itunes = sum(t.on_deezer for t in music), sum(t.on_itunes for t in music)
    nowhere = kept - deezer - itunes
    assert (kept, deezer > 0, itunes > 0, nowhere > 0) == (90, True, True, True)
    out = first.stdout
    assert "withheld by spotify: popularity 90, preview_url 90, isrc 0" in out
    assert f"previews looked up for 90 track(s): deezer {deezer}, itunes {itunes}, none {nowhere} " \
           f"(no_match {nowhere})" in out     # the fuzzy searches found other songs of the artist: refused
    assert f"popularity of new tracks: deezer_rank {deezer}, none {itunes}" in out
    assert "batch /tracks withheld" in out and "0 resumed from crawl_state" in out
    assert "90 resumed from crawl_state" not in second.stdout and " 0 units crawled" in second.stdout

    catalogue = DeltaTable(str(tmp_path / "lakehouse" / "catalogue")).to_pandas().set_index("track_id")
    assert len(catalogue) == deezer + itunes and (catalogue["source"] == "spotify:genre:hip hop").all()
    by_isrc = {t.isrc: t for t in music}
    for track_id, row in catalogue.iterrows():
        fake = by_isrc[row["isrc"]]
        assert row["preview_url"] == fake.preview and row["title"] == fake.title
        if fake.on_deezer:
            assert (row["popularity"], row["popularity_source"]) == (pytest.approx(fake.rank / 10_000), "deezer_rank")
        else:
            assert pd.isna(row["popularity"]) and pd.isna(row["popularity_source"])
    runs = DeltaTable(str(tmp_path / "lakehouse" / "crawl_state")).to_pandas().query("level == 'run'")
    assert len(runs) == 2                                # each finished crawl keeps its counts
    assert [json.loads(p)["withheld"] for p in runs["payload"]] == [
        {"popularity": 90, "preview_url": 90, "isrc": 0}] * 2
    rejects = DeltaTable(str(tmp_path / "lakehouse" / "rejects")).to_pandas()
    assert len(rejects) == nowhere                       # the second run rejected the same rows again: not stored twice
    assert rejects["reason"].str.contains(
        r"no audio reference .*; deezer: no_match \(\d+ search hit\(s\), none with title and artist both >= 0.9\); "
        r"itunes: no_match").all()

    secrets = [SECRET, base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode(), *tokens]
    outputs = [first.stdout, first.stderr, second.stdout, second.stderr]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".json" for p in files)
    for secret in secrets:
        assert not any(secret in text for text in outputs), "secret in the command's output"
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, f"secret in {leaked}"


def test_deezer_and_itunes_as_sources_and_as_the_fallback_for_csv_rows_without_audio(spark, lake, tmp_path):
    from hitpredict.stages import ingest_catalogue

    music = [FakeTrack(1, "Amber River", "Kalo Mi", "QZAAA2600001", "https://cdn.test/1.mp3", rank=420_000),
             FakeTrack(2, "Broken Rocket", "Lone Sa", "QZAAA2600002", "https://cdn.test/2.mp3", on_deezer=False),
             FakeTrack(3, "Cosmic Garden", "Ruvo Ze", None, "https://cdn.test/3.mp3", on_itunes=False)]
    csv = tmp_path / "demos.csv"
    csv.write_text("title,artists,isrc,popularity\nAmber River,Kalo Mi,QZ-AAA-26-00001,\n"
                   "Broken Rocket,Lone Sa;Guest,QZAAA2600002,61\nCosmic Garden (feat. X),Ruvo Ze,,\n"
                   "Dusty Engine,Nobody,,\n")
    with MusicApiServer(music) as apis:
        sets = [f"resolve.deezer_url={apis.base_url}/deezer", f"resolve.itunes_url={apis.base_url}/itunes",
                "resolve.backoff_base_s=0", "resolve.itunes_calls_per_minute=0"]
        only_itunes = load_config(None, [*sets, "ingest.source=itunes"], environ={})
        report = ingest_catalogue.run(only_itunes, spark, lake, str(csv))
        assert apis.requests["deezer"] == 0 and apis.requests["itunes"] > 0
        assert (report.ok, report.failed) == (2, {"no_id": 2})     # no ISRC, no preview found: nothing to key
        assert "previews looked up for 4 track(s): itunes 2, none 2 (not_found 2)" in report.details
        plain = load_config(None, sets, environ={})
        untouched = ingest_catalogue.run(plain, spark, lake, str(csv))       # a CSV: no look-up unless asked
        assert untouched.ok == 0 and apis.requests["deezer"] == 0
        fallback = load_config(None, [*sets, "ingest.resolve_missing=true"], environ={})
        filled = ingest_catalogue.run(fallback, spark, lake, str(csv))
    assert (filled.ok, filled.failed) == (1, {"no_id": 1})
    assert "previews looked up for 2 track(s): deezer 1, none 1 (not_found 1)" in filled.details
    catalogue = lake.read("catalogue").toPandas().set_index("title")
    assert list(catalogue.loc["Broken Rocket", ["preview_url", "popularity", "popularity_source"]]) == [
        "https://cdn.test/2.mp3", 61.0, "label"]
    assert catalogue.loc["Amber River", "preview_url"] == "https://cdn.test/1.mp3"            # iTunes, by ISRC
    assert pd.isna(catalogue.loc["Amber River", "popularity"])                               # iTunes has no rank
    assert list(catalogue.loc["Cosmic Garden (feat. X)", ["preview_url", "popularity", "popularity_source"]]) == [
        "https://cdn.test/3.mp3", 50.0, "deezer_rank"]                                       # Deezer, by search
    rejects = lake.read("rejects").toPandas()
    dusty = rejects[rejects["raw"].str.contains("Dusty Engine")]["reason"]
    assert dusty.str.contains("no track id, ISRC or audio reference").all()
    assert dusty.str.contains("deezer: not_found .*; itunes: not_found").any()
