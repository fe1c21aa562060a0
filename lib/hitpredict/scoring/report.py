"""``hitpredict report``: a self-contained HTML page (images inlined), the same PNGs beside it,
and a CSV of every scored track."""
from __future__ import annotations

import base64
import datetime as dt
import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hitpredict.audio_params import AudioParams
from hitpredict.features import decode_mel
from hitpredict.scoring import plots
from hitpredict.scoring.scorer import ScoreError
from hitpredict.scoring.view import latest_scores

if TYPE_CHECKING:
    from hitpredict.lake import Lake

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What :func:`render_report` wrote: the page, the CSV, the PNGs (in page order) and the tracks
    (one row per track, best first)."""

    html: Path
    csv: Path
    images: list[Path] = field(default_factory=list)
    tracks: pd.DataFrame = field(default_factory=pd.DataFrame)


def similar_text(value: Any, limit: int = 3) -> str:
    """The first ``limit`` similar artists of a ``similar_artists`` value as text,
    ``"A (42%), B (17%)"``; ``""`` for none."""
    if value is None or len(value) == 0:
        return ""
    return ", ".join(f"{item['artist']} ({item['prob']:.0%})" for item in list(value)[:limit])


#: First characters that make a spreadsheet read a cell as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    """``"-3.5"``, ``"+2e-3"``: a signed number with nothing around it (no whitespace, no ``_``)."""
    if text[:1] not in ("-", "+") or text != text.strip() or "_" in text:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def neutralise_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, made inert with a leading ``'``.

    Only strings change: numbers (a negative score included) stay numbers, and so does a string
    that is one number (``"-3.5"`` is data, not a formula). ``"=HYPERLINK(...)"``,
    ``"@SUM(A1)"``, ``"-1+2"`` and a list of numbers that starts with a minus sign
    (``"-0.01;0.02"``) become ``"'=HYPERLINK(...)"`` and so on.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number(value):
        return "'" + value
    return value


def neutralise_text_cells(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text cell passed through :func:`neutralise_cell`; numeric columns untouched."""
    out = table.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column].dtype):
            out[column] = out[column].map(neutralise_cell)
    return out


def export_csv(tracks: pd.DataFrame, path: Path) -> Path:
    """Every scored track, best first; lists as text so spreadsheets read them, and no text cell
    that a spreadsheet would run as a formula (:func:`neutralise_cell`)."""
    table = tracks.copy()
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table["similar_artists"] = ["; ".join(f"{i['artist']}:{i['prob']:.4f}" for i in v) if v is not None else ""
                                for v in table["similar_artists"]]
    table["segment_importance"] = [
        ";".join(f"{x:.5f}" for x in v) if v is not None else "" for v in table["segment_importance"]]
    # CRLF line ends (RFC 4180) also make the writer quote a text cell that holds a lone CR.
    neutralise_text_cells(table).to_csv(path, index=False, float_format="%.6f", lineterminator="\r\n")
    return path


def _spectrograms(lake: "Lake", track_ids: list[str]) -> dict[str, tuple[np.ndarray, float]]:
    """The stored log-mel of a few tracks and their window length in seconds."""
    from pyspark.sql import functions as F

    rows = (lake.read("features").where(F.col("track_id").isin(track_ids) & (F.col("status") == "ok"))
            .select("track_id", "mel", "mel_shape", "audio_params").collect())
    out = {}
    for row in rows:
        params = AudioParams.from_json(row.audio_params)
        mel = decode_mel(row.mel, row.mel_shape).astype(np.float32)
        out[row.track_id] = (mel, mel.shape[1] * params.hop_length / params.sample_rate)
    return out


def _image(path: Path, alt: str, css: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="{css}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _cell(value: Any, fmt: str = "{:.3f}") -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else fmt.format(value)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
h1 {{ margin-bottom: 0.2rem; }} .meta {{ color: #666; margin-top: 0; }}
.plots img {{ max-width: 49%; }} img.strip {{ max-width: 100%; display: block; margin: 0.5rem 0 1.5rem; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3rem 0.5rem; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="meta">{summary}</p>
<div class="plots">{plots}</div>
<h2>Top {top} tracks</h2>
<table id="top-tracks"><thead><tr><th>#</th><th>title</th><th>artist</th><th>{score_label}</th><th>percentile</th>
<th>sounds like</th><th>region</th></tr></thead>
<tbody>
{rows}
</tbody></table>
<h2>What makes the top tracks score</h2>
<p>Each strip shows the track's log-mel spectrogram and, under it, the change in the score when that
segment is replaced by the training mean: red segments raise the score, blue ones lower it.</p>
{strips}
<p class="meta">Full table: <a href="{csv}">{csv}</a></p>
<script>
window.addEventListener("load", function () {{
  var images = Array.prototype.slice.call(document.images);
  document.body.dataset.imagesLoaded = String(images.filter(function (i) {{
    return i.complete && i.naturalWidth > 0; }}).length);
  document.body.dataset.images = String(images.length);
}});
</script>
</body></html>
"""


def write_report(lake: "Lake", out_dir: str | Path, top: int = 50, strips: int = 10, segment_seconds: float = 3.0,
                 only: list[str] | None = None, title: str = "hitpredict: catalogue hit potential") -> Report:
    """Write ``report.html``, its PNGs and ``scores.csv`` under ``out_dir``; ``ScoreError`` if nothing is scored."""
    tracks = latest_scores(lake, only)
    if tracks.empty:
        raise ScoreError(f"nothing to report: the scores table at {lake.location('scores')} has no rows; "
                         f"run score_catalogue first")
    explained = tracks.head(top)
    explained = explained[explained["segment_importance"].notna()].head(strips)
    mels = _spectrograms(lake, explained["track_id"].tolist()) if len(explained) else {}
    return render_report(tracks, mels, out_dir, top, strips, segment_seconds, title)


def render_report(tracks: pd.DataFrame, mels: dict[str, tuple[np.ndarray, float]], out_dir: str | Path,
                  top: int = 50, strips: int = 10, segment_seconds: float = 3.0,
                  title: str = "hitpredict: catalogue hit potential") -> Report:
    """The report of ``tracks`` (one row per track, best first, as :func:`latest_scores` gives them)
    with the spectrograms ``mels`` (track_id -> (log-mel dB, window seconds)) of the explained ones.

    Every string from the data (titles, artists, model names) is text: HTML-escaped in the page,
    never mathtext in the plots, neutralised against formulas in the CSV.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(html=out / "report.html", csv=export_csv(tracks, out / "scores.csv"), tracks=tracks)
    column = "prob_popular" if tracks["prob_popular"].notna().any() else "popularity_pred"
    label = "P(popular)" if column == "prob_popular" else "predicted popularity"
    scored = tracks[tracks[column].notna()]
    values = scored[column].to_numpy(dtype=float)
    images = []
    if len(values):
        images.append(plots.score_histogram(values, label, 0.5 if column == "prob_popular" else None,
                                            out / "score_histogram.png"))
        pct = scored["percentile"].to_numpy(dtype=float)
        if np.isfinite(pct).any():
            images.append(plots.percentile_curve(values, np.nan_to_num(pct), top, label, out / "percentile_curve.png"))
    best = tracks.head(top)
    rows = []
    for i, t in enumerate(best.itertuples(index=False), start=1):
        rows.append(
            f"<tr><td class=num>{i}</td><td>{html.escape(str(t.title or t.track_id))}</td>"
            f"<td>{html.escape(str(t.primary_artist or ''))}</td><td class=num>{_cell(getattr(t, column))}</td>"
            f"<td class=num>{_cell(t.percentile, '{:.1f}')}</td><td>{html.escape(similar_text(t.similar_artists))}</td>"
            f"<td>{html.escape(str(t.region or ''))}</td></tr>")
    explained = best[best["segment_importance"].notna()].head(strips)
    strip_html = []
    for i, t in enumerate(explained.itertuples(index=False), start=1):
        if t.track_id not in mels:
            continue
        mel, seconds = mels[t.track_id]
        name = f"{i:02d}. {t.title or t.track_id} ({t.primary_artist or 'unknown artist'}): {label} " \
               f"{getattr(t, column):.3f}"
        path = plots.importance_strip(mel, seconds, t.segment_importance, segment_seconds, name,
                                      out / f"strip_{i:02d}.png")
        images.append(path)
        strip_html.append(_image(path, name, "strip"))
    report.images = images
    summary = (f"{len(tracks)} tracks scored by {', '.join(sorted(set(', '.join(tracks['models']).split(', '))))}; "
               f"written {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    page = PAGE.format(
        title=html.escape(title), summary=html.escape(summary), top=len(best), score_label=html.escape(label),
        plots="".join(_image(p, p.stem.replace("_", " ")) for p in images if not p.stem.startswith("strip")),
        rows="\n".join(rows), strips="\n".join(strip_html) or "<p>(no explained tracks)</p>",
        csv=html.escape(report.csv.name),
    )
    report.html.write_text(page, encoding="utf-8")
    log.info("report: %s (%d tracks, %d images)", report.html, len(tracks), len(images))
    return report
