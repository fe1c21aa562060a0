"""Report plots as PNG files (drawn through :mod:`hitpredict.plotting`)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from hitpredict.plotting import PLAIN_TEXT, pyplot, save_figure


def score_histogram(values: np.ndarray, label: str, threshold: float | None, path: Path) -> Path:
    """Distribution of the catalogue's scores."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.hist(values, bins=min(40, max(5, len(values) // 5)), color="#3b6ea8", edgecolor="white")
    if threshold is not None:
        ax.axvline(threshold, color="#c0392b", linestyle="--", label=f"{threshold:g}")
        ax.legend()
    ax.set_xlabel(label, **PLAIN_TEXT)
    ax.set_ylabel("tracks")
    ax.set_title(f"{label} over {len(values)} scored tracks", **PLAIN_TEXT)
    return save_figure(fig, path)


def percentile_curve(scores: np.ndarray, percentiles: np.ndarray, top: int, label: str, path: Path) -> Path:
    """Score -> percentile in the model's reference distribution, every track a point, the top ones marked."""
    plt = pyplot()
    order = np.argsort(scores)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(scores[order], percentiles[order], color="#3b6ea8", linewidth=1.5, label="catalogue tracks")
    best = np.argsort(-percentiles, kind="stable")[:top]
    ax.scatter(scores[best], percentiles[best], color="#c0392b", s=12, zorder=3, label=f"top {len(best)}")
    ax.set_xlabel(label, **PLAIN_TEXT)
    ax.set_ylabel("percentile (model's reference)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def importance_strip(mel_db: np.ndarray, seconds: float, importance: Sequence[float], segment_seconds: float,
                     title: str, path: Path) -> Path:
    """The log-mel spectrogram with, under it, how much each segment raises (red) or lowers (blue) the score."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 3.2), sharex=True, gridspec_kw={"height_ratios": [4, 1]})
    top.imshow(mel_db, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, mel_db.shape[0]))
    top.set_ylabel("mel band")
    top.set_title(title, fontsize=9, **PLAIN_TEXT)   # a track's title and artist: text, never mathtext
    values = np.asarray(importance, dtype=float)
    if values.size and np.ceil(seconds / segment_seconds - 1e-6) != values.size:   # scored with other settings
        segment_seconds = seconds / values.size
    scale = max(float(np.max(np.abs(values))) if values.size else 0.0, 1e-6)
    colours = plt.get_cmap("RdBu_r")((values / scale + 1) / 2)
    for i, colour in enumerate(colours):
        start = i * segment_seconds
        bottom.axvspan(start, min(start + segment_seconds, seconds), color=colour)
        bottom.text(min(start + segment_seconds / 2, seconds - 0.1), 0.5, f"{values[i]:+.3f}", ha="center",
                    va="center", fontsize=6, color="white" if abs(values[i]) > 0.6 * scale else "black")
    bottom.set_yticks([])
    bottom.set_xlim(0, seconds)
    bottom.set_xlabel("seconds (segment importance: score drop when the segment is replaced by the training mean)")
    bottom.xaxis.label.set_size(7)
    return save_figure(fig, path)
