"""Honest datasets: targets, artist-grouped splits, training-only statistics. Pure functions.

The studies this product grew from split tracks at random, so one artist's songs sat in
train and test alike. Here no artist is in two splits (for the ``artist`` target, where
that is impossible, no track is), identical audio (same sha256) never crosses splits,
and every statistic a model learns from (the popular threshold, normalisation) comes
from the training split alone.

:func:`label_examples` turns the keys of every usable track into labelled, split rows, with
one labelling rule per target (:data:`LABEL_RULES`); ``stages/build_dataset.py`` reads the
keys from the lake and writes the result.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from hitpredict.config import DatasetConfig
from hitpredict.errors import HitpredictError
from hitpredict.targets import TARGETS

SPLITS = ("train", "validation", "test")
#: What ``dataset.popularity_sources`` calls popularity with no ``popularity_source`` (older catalogue rows).
UNNAMED_SOURCE = "unnamed"


class DatasetError(HitpredictError, ValueError):
    """The data cannot make a dataset (empty split, one class, mixed shapes); one line."""


# --------------------------------------------------------------------------- grouping


def _find(parent: dict[str, str], key: str) -> str:
    while parent[key] != key:
        parent[key] = parent[parent[key]]
        key = parent[key]
    return key


def split_groups(group: Sequence[str], sha256: Sequence[str | None]) -> list[str]:
    """Merge groups that share any identical audio; returns each row's merged group key."""
    parent: dict[str, str] = {g: g for g in group}
    first_group_of_hash: dict[str, str] = {}
    for g, h in zip(group, sha256):
        if not h:
            continue
        if h in first_group_of_hash:
            a, b = _find(parent, g), _find(parent, first_group_of_hash[h])
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            first_group_of_hash[h] = g
    return [_find(parent, g) for g in group]


def assign_splits(
    group: Sequence[str], stratum: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 13,
) -> list[str]:
    """Split rows so that each group lands whole in one split, stratified on ``stratum``
    as far as the grouping allows; reproducible from ``seed``.

    Groups are placed largest first (ties in a seeded random order), each into the split
    whose per-class shortfall against its target fraction is largest for that group's mix.
    """
    frame = pd.DataFrame({"group": list(group), "stratum": list(stratum)})
    mix = frame.groupby(["group", "stratum"]).size().unstack(fill_value=0)
    rng = np.random.default_rng(seed)
    order = mix.index.to_numpy()[rng.permutation(len(mix))]
    sizes = mix.loc[order].sum(axis=1).to_numpy()
    order = order[np.argsort(-sizes, kind="stable")]
    target = np.asarray(fractions, dtype=float)
    placed = np.zeros((len(SPLITS), mix.shape[1]))
    where: dict[str, str] = {}
    for g in order:
        counts = mix.loc[g].to_numpy(dtype=float)
        totals = placed.sum(axis=0) + counts
        shortfall = target[:, None] * totals[None, :] - placed  # splits x classes
        score = (shortfall * counts[None, :]).sum(axis=1)
        best = int(np.argmax(score))
        placed[best] += counts
        where[g] = SPLITS[best]
    return [where[g] for g in frame["group"]]


# --------------------------------------------------------------------------- targets


def popular_threshold(popularity: pd.Series, split: pd.Series, threshold: float | None,
                      quantile: float | None) -> float:
    """The popular/not threshold: a fixed score, or a quantile of the *training* split only."""
    if threshold is not None:
        return float(threshold)
    train = popularity[(split == "train").to_numpy()].dropna()
    if train.empty:
        raise DatasetError("cannot compute the popular threshold: the training split has no popularity values")
    if quantile is None:
        raise DatasetError("set dataset.popular_threshold or dataset.popular_quantile")
    return float(np.quantile(train.to_numpy(dtype=float), quantile))


def check_classes(labels: pd.Series, split: pd.Series, target: str) -> None:
    """Refuse a training split that is empty or, for a classification target, holds a single class.

    ``labels`` and ``split`` are aligned per row; ``target`` is a key of ``targets.TARGETS``.
    Raises ``DatasetError`` naming the target and the counts; a target this version does not know
    (a ``datasets`` row written by a newer one) is refused by name.
    """
    if target not in TARGETS:
        raise DatasetError(f"target {target!r} is not a target this version knows ({', '.join(TARGETS)}): "
                           "the dataset was built by another version of hitpredict")
    train = labels[(split == "train").to_numpy()]
    if train.empty:
        counts = split.value_counts().to_dict()
        raise DatasetError(f"target {target!r}: the training split is empty (rows per split: {counts})")
    if TARGETS[target].task != "regression" and train.nunique() < 2:
        raise DatasetError(f"target {target!r}: the training split has a single class "
                           f"({train.iloc[0]!r} for all {len(train)} rows)")


def check_shapes(shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The one spectrogram shape of all rows, or ``DatasetError`` naming each shape and its count."""
    counts = pd.Series([tuple(s) for s in shapes]).value_counts()
    if len(counts) > 1:
        listed = ", ".join(f"{n} x {list(shape)}" for shape, n in counts.items())
        raise DatasetError(f"features hold mixed spectrogram shapes: {listed}; re-extract with one audio config")
    if counts.empty:
        raise DatasetError("no features to build a dataset from")
    return tuple(counts.index[0])


# --------------------------------------------------------------------------- statistics


@dataclass
class RunningMoments:
    """Per-dimension count, sum and sum of squares; mergeable across Spark tasks."""

    count: int = 0
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    squares: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, rows: np.ndarray) -> None:
        """Add observations, ``rows`` shaped (n, dims)."""
        rows = np.asarray(rows, dtype=np.float64)
        if self.total.size == 0:
            self.total = np.zeros(rows.shape[1])
            self.squares = np.zeros(rows.shape[1])
        self.count += rows.shape[0]
        self.total += rows.sum(axis=0)
        self.squares += np.square(rows).sum(axis=0)

    def merge(self, other: "RunningMoments") -> "RunningMoments":
        """The moments of both sets of observations (either may be empty)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        return RunningMoments(self.count + other.count, self.total + other.total, self.squares + other.squares)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std): float32 arrays (dims,); std is the population standard deviation."""
        mean = self.total / max(self.count, 1)
        var = np.maximum(self.squares / max(self.count, 1) - mean**2, 0.0)
        return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


# --------------------------------------------------------------------------- labelling


@dataclass
class Labelled:
    """What a labelling rule returns: the rows it kept, with ``split``, ``label`` (float) and
    ``label_name`` columns, and what the ``datasets`` record says about them."""

    rows: pd.DataFrame
    #: popular: the popularity score at and above which a track is popular.
    threshold: float | None = None
    #: Class names in label order (``label`` i is ``label_names[i]``); None for a regression.
    label_names: list[str] | None = None
    #: popularity targets: rows per ``popularity_source`` used.
    popularity_sources: dict[str, int] = field(default_factory=dict)


def split_rows(rows: pd.DataFrame, config: DatasetConfig, stratum: Callable[[pd.DataFrame], pd.Series] | str,
               group_by_track: bool = False) -> pd.DataFrame:
    """``rows`` sorted by ``track_id``, with a ``split`` column (:data:`SPLITS`).

    Rows of one primary artist (or, with ``group_by_track``, of one track) and rows sharing an
    ``audio_sha256`` land in one split; splits are stratified on ``stratum`` (a column name, or a
    function of the sorted rows) and follow ``config.split_fractions`` and ``config.seed``.
    Raises ``DatasetError`` when ``rows`` is empty.
    """
    target = config.target
    if rows.empty:
        raise DatasetError(f"target {target!r}: no track has both ok features and a {target} value")
    rows = rows.sort_values("track_id").reset_index(drop=True)
    if group_by_track:
        group = rows["track_id"].tolist()
    else:
        group = [a if isinstance(a, str) and a else f"track:{t}"
                 for a, t in zip(rows["primary_artist"], rows["track_id"])]
    group = split_groups(group, rows["audio_sha256"].tolist())
    strata = stratum(rows) if callable(stratum) else rows[stratum]
    rows["split"] = assign_splits(group, strata.astype(str).tolist(), config.split_fractions, config.seed)
    return rows


def _with_popularity(keys: pd.DataFrame, config: DatasetConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows with a popularity from one of ``config.popularity_sources`` (all when None), and rows
    per source; ``DatasetError`` naming the sources found when none is chosen."""
    rows = keys[keys["popularity"].notna()]
    named = rows["popularity_source"].fillna(UNNAMED_SOURCE)
    if config.popularity_sources is not None:
        chosen = named.isin(config.popularity_sources)
        if not chosen.any():
            found = ", ".join(f"{k} {v}" for k, v in sorted(named.value_counts().items())) or "none"
            raise DatasetError(f"target {config.target!r}: no track with ok features has popularity from "
                               f"{', '.join(config.popularity_sources)} (dataset.popularity_sources); "
                               f"these have: {found}")
        rows, named = rows[chosen], named[chosen]
    return rows, {str(k): int(v) for k, v in sorted(named.value_counts().items())}


def _popularity_quartiles(rows: pd.DataFrame) -> pd.Series:
    """Each row's popularity quartile (fewer bins below four rows): the stratum of popularity targets."""
    return pd.qcut(rows["popularity"].rank(method="first"), q=min(4, len(rows)), labels=False)


def _classes(rows: pd.DataFrame, column: str) -> Labelled:
    """Classification labels: the sorted distinct values of ``column`` are the classes, ``label`` their index."""
    names = sorted(rows[column].unique())
    rows["label"] = rows[column].map({n: float(i) for i, n in enumerate(names)})
    rows["label_name"] = rows[column]
    return Labelled(rows, label_names=names)


def label_popular(keys: pd.DataFrame, config: DatasetConfig) -> Labelled:
    """popular: 1.0 when popularity >= the threshold (fixed, or a quantile of the training split), else 0.0."""
    rows, sources = _with_popularity(keys, config)
    rows = split_rows(rows, config, _popularity_quartiles)
    threshold = popular_threshold(rows["popularity"], rows["split"], config.popular_threshold, config.popular_quantile)
    rows["label"] = (rows["popularity"] >= threshold).astype(float)
    rows["label_name"] = np.where(rows["label"] > 0, "popular", "not_popular")
    return Labelled(rows, threshold=threshold, label_names=["not_popular", "popular"], popularity_sources=sources)


def label_popularity(keys: pd.DataFrame, config: DatasetConfig) -> Labelled:
    """popularity: the popularity score itself (0-100), no label name."""
    rows, sources = _with_popularity(keys, config)
    rows = split_rows(rows, config, _popularity_quartiles)
    rows["label"] = rows["popularity"].astype(float)
    rows["label_name"] = None
    return Labelled(rows, popularity_sources=sources)


def label_artist(keys: pd.DataFrame, config: DatasetConfig) -> Labelled:
    """artist: the primary artist, among the ``config.artist_top_n`` artists with the most tracks.
    The label is the artist, so splits group by track (an artist spans splits, a track never does)."""
    column = TARGETS["artist"].label_column
    top = keys[column].dropna().value_counts().head(config.artist_top_n).index
    rows = split_rows(keys[keys[column].isin(top)], config, column, group_by_track=True)
    return _classes(rows, column)


def label_region(keys: pd.DataFrame, config: DatasetConfig) -> Labelled:
    """region: the catalogue's region, for tracks that have one."""
    column = TARGETS["region"].label_column
    rows = split_rows(keys[keys[column].notna()], config, column)
    return _classes(rows, column)


#: One labelling rule per target of ``targets.TARGETS``: (keys, dataset config) -> :class:`Labelled`.
#: A rule chooses the rows that qualify, splits them (:func:`split_rows`) and labels them.
LABEL_RULES: dict[str, Callable[[pd.DataFrame, DatasetConfig], Labelled]] = {
    "popular": label_popular,
    "popularity": label_popularity,
    "artist": label_artist,
    "region": label_region,
}


def label_examples(keys: pd.DataFrame, config: DatasetConfig,
                   mel_shape: Sequence[int]) -> tuple[pd.DataFrame, dict]:
    """Split and label the tracks of ``config.target``; no Spark, no lake.

    Parameters
    ----------
    keys : one row per track with ok features: ``track_id``, ``audio_sha256``, ``primary_artist``,
        ``popularity``, ``popularity_source``, ``region`` (other columns are kept).
    config : the ``dataset`` section (target, thresholds, split fractions, seed).
    mel_shape : the one spectrogram shape of the features, (n_mels, frames).

    Returns
    -------
    rows : the rows that qualify, sorted by ``track_id``, with ``split``, ``label`` (float: 0/1,
        the popularity score, or the class index) and ``label_name`` (str or None).
    meta : ``target``, ``mel_shape``, ``threshold``, ``label_names`` and ``popularity_sources``
        (source -> rows), as the ``datasets`` record and the stage report use them.

    Raises ``DatasetError`` (one line) when no track qualifies, no popularity source is chosen,
    or the training split is empty or holds a single class.
    """
    target = config.target
    rule = LABEL_RULES.get(target)
    if rule is None:
        raise DatasetError(f"target {target!r} has no labelling rule in dataset.LABEL_RULES")
    labelled = rule(keys, config)
    rows = labelled.rows
    check_classes(rows["label"], rows["split"], target)
    meta: dict = {"target": target, "mel_shape": list(mel_shape), "threshold": labelled.threshold,
                  "label_names": labelled.label_names, "popularity_sources": labelled.popularity_sources}
    return rows, meta


def dataset_id(payload: dict) -> str:
    """A stable id for one dataset build: same config and same inputs, same id."""
    return "ds-" + hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
