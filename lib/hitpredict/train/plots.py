"""Evaluation plots of a training run as PNG files (drawn through :mod:`hitpredict.plotting`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hitpredict.plotting import PLAIN_TEXT, pyplot, save_figure


def history_plot(history: dict[str, list[float]], path: Path) -> Path:
    """Training and validation loss (and the first other metric) per epoch; ``history`` maps a Keras
    metric name to one value per epoch. Returns ``path``."""
    plt = pyplot()
    metrics = [k for k in history if not k.startswith("val_") and k not in ("loss", "lr")]
    panels = ["loss"] + metrics[:1]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, key in zip(axes[0], panels):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    return save_figure(fig, path)


def calibration_plot(bins: list[dict[str, float]], baseline_rate: float, path: Path) -> Path:
    """Reliability diagram: observed popular rate against mean predicted probability per bin
    (``bins`` as :func:`hitpredict.evaluation.calibration_bins` returns them), with the training prior
    ``baseline_rate`` (0-1) as the dummy's line. Returns ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    if bins:
        x = [b["mean_prob"] for b in bins]
        y = [b["observed"] for b in bins]
        sizes = [20 + 8 * b["count"] for b in bins]
        ax.plot(x, y, color="C0")
        ax.scatter(x, y, s=sizes, color="C0", label="model (dot size = tracks)")
    ax.axhline(baseline_rate, color="C1", linestyle=":", label="dummy (prior)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability of popular")
    ax.set_ylabel("observed share popular")
    ax.set_title("Reliability on the test split")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def confusion_plot(confusion: list[list[int]], labels: list[str], path: Path, caption: str = "") -> Path:
    """Confusion matrix of the test split: ``confusion`` (classes, classes) of counts, true classes as rows,
    predicted as columns, ``labels`` naming the classes in order; ``caption`` (e.g. the accuracy and
    macro-F1 with their intervals) is a second title line. Returns ``path``."""
    plt = pyplot()
    matrix = np.asarray(confusion)
    size = max(4.0, 0.4 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), [str(label) for label in labels], rotation=90, fontsize=7, **PLAIN_TEXT)
    ax.set_yticks(range(len(labels)), [str(label) for label in labels], fontsize=7, **PLAIN_TEXT)
    for (i, j), n in np.ndenumerate(matrix):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                    color="white" if n > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if caption:
        ax.set_title(f"Confusion on the test split\n{caption}", fontsize=9, **PLAIN_TEXT)
    else:
        ax.set_title("Confusion on the test split")
    return save_figure(fig, path)


def regression_plot(y_true: np.ndarray, y_pred: np.ndarray, path: Path) -> Path:
    """Predicted against true popularity on the test split, ``y_true`` and ``y_pred`` both shape (n,),
    with the diagonal for reference. Returns ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(y_true, y_pred, s=12, alpha=0.7)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], linestyle="--", color="grey")
    ax.set_xlabel("true popularity")
    ax.set_ylabel("predicted popularity")
    ax.set_title("Test split")
    return save_figure(fig, path)
