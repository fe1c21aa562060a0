"""One row per track from the ``scores`` table's one row per (track, model): what people read."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from hitpredict.lake import Lake

TRACK_COLUMNS = ["track_id", "title", "primary_artist", "prob_popular", "popularity_pred", "percentile",
                 "similar_artists", "region", "segment_importance", "models", "scored_at"]


def newest_versions(scores: pd.DataFrame) -> pd.DataFrame:
    """The rows of each model name's most recently scored version."""
    if scores.empty:
        return scores
    newest = scores.groupby(["model_name", "model_version"])["scored_at"].max().reset_index()
    newest = newest.sort_values("scored_at").groupby("model_name").tail(1)[["model_name", "model_version"]]
    return scores.merge(newest, on=["model_name", "model_version"])


def _first_present(rows: pd.DataFrame, column: str) -> pd.Series:
    present = rows[rows[column].map(lambda v: v is not None and not (np.isscalar(v) and pd.isna(v)))]
    return present.groupby("track_id")[column].first()


def merge_models(scores: pd.DataFrame) -> pd.DataFrame:
    """Per track: the popularity columns (from a popular model before a popularity model), the
    similar artists and the region, each from the most recently scored model that gives it."""
    if scores.empty:
        return pd.DataFrame(columns=[c for c in TRACK_COLUMNS if c not in ("title", "primary_artist")])
    rows = scores.sort_values("scored_at", ascending=False, kind="stable")
    main = rows[rows["prob_popular"].notna() | rows["popularity_pred"].notna()]
    main = main.sort_values("prob_popular", key=lambda s: s.isna(), kind="stable").groupby("track_id").first()
    out = pd.DataFrame(index=pd.Index(sorted(rows["track_id"].unique()), name="track_id"))
    for column in ("prob_popular", "popularity_pred"):
        out[column] = _first_present(rows, column)
    for column in ("percentile", "segment_importance"):
        out[column] = main[column] if not main.empty else None
    for column in ("similar_artists", "region"):
        out[column] = _first_present(rows, column)
    label = rows["model_name"].str.replace(r"^file:.*/", "", regex=True) + " v" + rows["model_version"]
    out["models"] = label.groupby(rows["track_id"]).agg(lambda s: ", ".join(sorted(set(s))))
    out["scored_at"] = rows.groupby("track_id")["scored_at"].max()
    out = out.astype(object).where(out.notna(), None)
    return out.reset_index()


def rank(tracks: pd.DataFrame) -> pd.DataFrame:
    """Best first: by percentile, then by the score itself."""
    key = [c for c in ("percentile", "prob_popular", "popularity_pred") if c in tracks]
    return tracks.sort_values(key, ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def latest_scores(lake: "Lake", only: Iterable[str] | None = None) -> pd.DataFrame:
    """Every scored track with its title and artist, best first, from each model name's newest version."""
    scores = lake.read_columns("scores", ["track_id", "model_name", "model_version", "prob_popular",
                                          "popularity_pred", "percentile", "similar_artists", "region",
                                          "segment_importance", "scored_at"]).to_pandas()
    if only is not None:
        scores = scores[scores["track_id"].isin(set(only))]
    tracks = merge_models(newest_versions(scores))
    catalogue = lake.read_columns("catalogue", ["track_id", "title", "primary_artist"]).to_pandas()
    tracks = tracks.merge(catalogue.drop_duplicates("track_id"), on="track_id", how="left")
    return rank(tracks[TRACK_COLUMNS])
