"""ingest_catalogue: mapping, validation, stable ids, duplicates, rejects, idempotent reruns."""
from __future__ import annotations

import datetime as dt
import os
import threading

import pandas as pd
import pytest

from hitpredict.config import load_config
from hitpredict.ingest import SourceError, normalise_catalogue, normalise_isrc, resolve_columns, stable_track_id
from hitpredict.stages import ingest_catalogue
from hitpredict.synth.music import TrackStyle, render, write_audio

CSV = """track_id,title,artists,isrc,release_date,audio_uri,preview_url,popularity,streams
a1,Song A,X;Y,US-ABC-24-00001,2024-01-02,,http://h/a.mp3,50,"1,200"
a2,Song B,Z,,2024-13-45,,http://h/b.mp3,50,10
,Song C,Z,,2024,,http://h/c.mp3,50,10
a4,Song D,Z,,,,,50,10
a5,Song E,Z,,,,http://h/e.mp3,150,10
a6,Song F,Z,usabc2400001,,,http://h/f.mp3,5,10
a7,Song G,Z,,,,http://h/a.mp3,5,10
a1,Song A again,Z,,,,http://h/z.mp3,5,10
a9,Song I,Z,,2020,,http://h/i.mp3,abc,1
a10,Song J,W,,2019-05,/music/j.mp3,,,
"""


def test_normalise_keeps_good_rows_and_rejects_the_rest_with_row_and_reason():
    raw = pd.read_csv(pd.io.common.StringIO(CSV), dtype=str, keep_default_na=False)
    result = normalise_catalogue(raw, resolve_columns({}, raw.columns), "csv:t.csv")
    assert list(result.rows["track_id"]) == ["a1", "a10"]
    a1 = result.rows.iloc[0]
    assert a1["artists"] == ["X", "Y"] and a1["primary_artist"] == "X"
    assert a1["isrc"] == "USABC2400001" and a1["streams"] == 1200
    assert a1["release_date"] == dt.date(2024, 1, 2)
    assert result.rows.iloc[1]["release_date"] == dt.date(2019, 5, 1)
    reasons = dict(zip(result.rejects["row_number"], result.rejects["reason"]))
    assert reasons == {
        2: "row 2: unparsable release_date '2024-13-45' (formats: %Y-%m-%d, %Y-%m, %Y, %d/%m/%Y, %Y/%m/%d)",
        3: "row 3: no track id (column 'track_id' is empty)",
        4: "row 4: no audio reference (audio_uri and preview_url are empty)",
        5: "row 5: popularity 150 outside 0-100",
        6: "row 6: duplicate of a1 (same isrc 'USABC2400001')",
        7: "row 7: duplicate of a1 (same preview_url 'http://h/a.mp3')",
        8: "row 8: duplicate of a1 (same track_id 'a1')",
        9: "row 9: popularity 'abc' is not a number",
    }
    assert result.counts == {"bad_date": 1, "no_id": 1, "no_audio": 1, "bad_popularity": 2, "duplicate": 3, "ok": 2}
    assert '"title": "Song C"' in result.rejects.iloc[1]["raw"]


def test_column_mapping_and_derived_stable_ids():
    raw = pd.DataFrame({"ISRC Code": ["GB-XYZ-20-12345", ""], "Link": ["http://h/1.mp3", "http://h/2.mp3"],
                        "Name": ["One", "Two"]})
    columns = {"isrc": "ISRC Code", "preview_url": "Link", "title": "Name"}
    first = normalise_catalogue(raw, columns, "csv:x")
    again = normalise_catalogue(raw, columns, "csv:x")
    assert list(first.rows["track_id"]) == list(again.rows["track_id"])  # stable across runs
    assert first.rows.iloc[0]["track_id"] == stable_track_id("GBXYZ2012345")
    assert first.rows.iloc[1]["track_id"] == stable_track_id(None, None, "http://h/2.mp3")
    with pytest.raises(SourceError, match=r"mapped column\(s\) not found: isrc -> 'Isrc'.*the source has: ISRC Code"):
        normalise_catalogue(raw, {"isrc": "Isrc"}, "csv:x")


def test_existing_tracks_are_skipped_and_clashes_with_them_rejected():
    raw = pd.DataFrame({"track_id": ["a1", "b2"], "preview_url": ["http://h/a.mp3", "http://h/known.mp3"]})
    existing = {"track_id": {"a1": "a1"}, "isrc": {}, "preview_url": {"http://h/known.mp3": "k9"}, "audio_uri": {}}
    result = normalise_catalogue(raw, resolve_columns({}, raw.columns), "csv:x", existing=existing)
    assert result.rows.empty
    assert result.counts["already_in_catalogue"] == 1
    assert result.rejects.iloc[0]["reason"] == "row 2: duplicate of k9 (same preview_url 'http://h/known.mp3')"


def test_isrc_normalisation():
    assert normalise_isrc(" us-abc-24-00001 ") == "USABC2400001"
    assert normalise_isrc("not an isrc") is None


def test_stage_ingests_csv_and_parquet_once_and_records_rejects_once(spark, lake, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(CSV)
    config = load_config(None, ["ingest.allow_roots=[/music]"], environ={})  # a10's audio lives there
    first = ingest_catalogue.run(config, spark, lake, str(path))
    assert (first.rows_in, first.ok, first.failed_total) == (10, 2, 8)
    again = ingest_catalogue.run(config, spark, lake, str(path))
    assert again.ok == 0
    assert lake.read("catalogue").count() == 2
    assert lake.read("rejects").count() == 8  # not recorded twice

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["track_id"] = frame["track_id"].map(lambda t: f"pq-{t}" if t else t)
    frame["preview_url"] = frame["preview_url"].str.replace("http://h/", "http://p/")
    frame["isrc"] = ""
    frame.to_parquet(tmp_path / "labels.parquet")
    report = ingest_catalogue.run(config, spark, lake, str(tmp_path / "labels.parquet"))
    # pq-a1 and pq-a6 (no ISRC now) are new; pq-a10 repeats a10's audio file.
    assert report.ok == 2
    assert lake.read("catalogue").count() == 4
    reasons = [r.reason for r in lake.read("rejects").where("source = 'parquet:labels.parquet'").collect()]
    assert "row 10: duplicate of a10 (same audio_uri '/music/j.mp3')" in reasons


def test_stage_reads_a_folder_of_audio_with_tags(spark, lake, tmp_path):
    from mutagen.easyid3 import EasyID3

    folder = tmp_path / "demos"
    (folder / "sub").mkdir(parents=True)
    clip = render(TrackStyle(seconds=1.0), 22050)
    write_audio(folder / "Artist One - First Demo.mp3", clip, 22050)
    write_audio(folder / "sub" / "tagged.mp3", clip, 22050)
    write_audio(folder / "notes.wav", clip, 22050, "WAV")
    (folder / "readme.txt").write_text("not audio")
    tags = EasyID3()
    tags.update({"title": "Tagged Title", "artist": "Tag Artist/Guest", "isrc": "USAAA2400009", "date": "2023-04-05"})
    tags.save(folder / "sub" / "tagged.mp3")

    report = ingest_catalogue.run(load_config(None, environ={}), spark, lake, str(folder))
    assert (report.rows_in, report.ok) == (3, 3)
    rows = {r.title: r for r in lake.read("catalogue").collect()}
    assert set(rows) == {"First Demo", "Tagged Title", "notes"}
    assert rows["First Demo"].primary_artist == "Artist One"
    tagged = rows["Tagged Title"]
    assert tagged.artists == ["Tag Artist", "Guest"] and tagged.isrc == "USAAA2400009"
    assert tagged.release_date == dt.date(2023, 4, 5) and tagged.audio_uri.endswith("sub/tagged.mp3")
    assert ingest_catalogue.run(load_config(None, environ={}), spark, lake, str(folder)).ok == 0


def test_missing_source_is_a_one_line_error(spark, lake, tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        ingest_catalogue.run(load_config(None, environ={}), spark, lake, str(tmp_path / "nope.csv"))



# --------------------------------------------------------------------------- issue 12: untrusted audio_uri


def test_local_audio_outside_the_roots_is_rejected(tmp_path):
    root = tmp_path / "label"
    (root / "audio").mkdir(parents=True)
    (root / "audio" / "ok.mp3").write_bytes(b"x")
    (tmp_path / "elsewhere.mp3").write_bytes(b"x")
    (root / "audio" / "escape.mp3").symlink_to(tmp_path / "elsewhere.mp3")
    raw = pd.DataFrame({"track_id": [f"t{i}" for i in range(8)], "audio_uri": [
        str(root / "audio" / "ok.mp3"), "audio/ok2.mp3", f"file://{root}/audio/ok3.mp3",
        "/proc/self/environ", "/etc/passwd", str(root / "audio" / "escape.mp3"), "../elsewhere.mp3",
        "s3://bucket/k.mp3"]})
    result = normalise_catalogue(raw, resolve_columns({}, raw.columns), "csv:c.csv",
                                 audio_roots=[str(root)], base_dir=str(root))
    assert list(result.rows["track_id"]) == ["t0", "t1", "t2", "t7"]
    assert result.rows.set_index("track_id").at["t1", "audio_uri"] == str(root / "audio" / "ok2.mp3")
    assert result.counts["audio_outside_roots"] == 4
    reasons = dict(zip(result.rejects["track_id"], result.rejects["reason"]))
    assert "system pseudo-file" in reasons["t3"] and "outside the allowed roots" in reasons["t4"]
    assert set(reasons) == {"t3", "t4", "t5", "t6"}


def test_stage_rejects_audio_outside_the_catalogue_folder_and_fetch_reads_only_inside(spark, lake, tmp_path):
    from hitpredict.stages import fetch_previews

    folder = tmp_path / "label"
    folder.mkdir()
    clip = render(TrackStyle(seconds=1.0), 22050)
    write_audio(folder / "in.mp3", clip, 22050)
    write_audio(tmp_path / "out.mp3", clip, 22050)
    os.mkfifo(folder / "fifo.mp3")
    (folder / "c.csv").write_text("track_id,audio_uri\na,in.mp3\nb,{0}/out.mp3\nc,/proc/self/environ\nd,fifo.mp3\n"
                                  .format(tmp_path))
    config = load_config(None, [f"lake.root={tmp_path / 'lh'}", "fetch.total_timeout_s=5"], environ={})
    report = ingest_catalogue.run(config, spark, lake, str(folder / "c.csv"))
    assert report.ok == 2 and report.failed == {"audio_outside_roots": 2}
    assert lake.read_columns("audio_roots", ["root"]).column("root").to_pylist() == [os.path.realpath(folder)]
    fetch_previews.run(config, spark, lake)  # a FIFO in the folder must not block the task
    outcome = {r["track_id"]: r["error_kind"] or r["status"] for r in lake.read_arrow("previews").to_pylist()}
    assert outcome == {"a": "ok", "d": "not_a_file"}


def test_folder_source_does_not_open_fifos_or_escaping_links(spark, lake, tmp_path):
    folder = tmp_path / "demos"
    folder.mkdir()
    write_audio(folder / "Artist - Song.mp3", render(TrackStyle(seconds=1.0), 22050), 22050)
    os.mkfifo(folder / "x.mp3")
    (folder / "env.mp3").symlink_to("/proc/self/environ")
    done = {}
    thread = threading.Thread(target=lambda: done.setdefault(
        "report", ingest_catalogue.run(load_config(None, environ={}), spark, lake, str(folder))), daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "ingesting a folder with a FIFO blocked"
    report = done["report"]
    assert report.ok == 2 and report.failed == {"audio_outside_roots": 1}
