"""Honest datasets: targets, artist-grouped splits, training-only statistics. Pure functions.

The studies this product grew from split tracks at random, so one artist's songs sat in
train and test alike. Here no artist is in two splits (for the ``artist`` target, where
that is impossible, no track is), identical audio (same sha256) never crosses splits,
and every statistic a model learns from (the popular threshold, normalisation) comes
from the training split alone.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "test")


class DatasetError(ValueError):
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
    return float(np.quantile(train.to_numpy(dtype=float), quantile))


def check_classes(labels: pd.Series, split: pd.Series, target: str) -> None:
    """Refuse a training split that is empty or holds a single class."""
    train = labels[(split == "train").to_numpy()]
    if train.empty:
        counts = split.value_counts().to_dict()
        raise DatasetError(f"target {target!r}: the training split is empty (rows per split: {counts})")
    if target != "popularity" and train.nunique() < 2:
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
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        return RunningMoments(self.count + other.count, self.total + other.total, self.squares + other.squares)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total / max(self.count, 1)
        var = np.maximum(self.squares / max(self.count, 1) - mean**2, 0.0)
        return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def dataset_id(payload: dict) -> str:
    """A stable id for one dataset build: same config and same inputs, same id."""
    return "ds-" + hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
