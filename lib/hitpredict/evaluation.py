"""Test-split metrics with bootstrap confidence intervals: pure functions on numpy arrays.

Binary: accuracy, ROC-AUC (95% bootstrap interval), PR-AUC, Brier score, calibration bins.
Regression: MSE, MAE, Spearman (95% bootstrap interval). Multiclass: accuracy and macro-F1 (each
with its 95% bootstrap interval), top-3 accuracy, confusion matrix. Every result is plain JSON-ready data.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray], float], y_true: np.ndarray, y_score: np.ndarray,
    rounds: int = 1000, level: float = 0.95, seed: int = 0, stratified: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` over resampled (row) pairs: (low, high).

    ``metric(y_true, y_score)`` takes ``y_true`` of shape (n,) and ``y_score`` of shape (n,) or (n, classes)
    and returns a float; ``rounds`` resamples of n rows with replacement (``seed`` fixes them) give its
    distribution, and the interval holds its central ``level`` (0-1). ``stratified``: resample within each
    value of ``y_true``, so every class keeps its count (a per-class average such as macro-F1 otherwise
    loses the small classes a resample misses). Resamples where the metric is undefined (e.g. one class
    only for ROC-AUC) are skipped; (nan, nan) when every one is.
    """
    rng = np.random.default_rng(seed)
    n = len(y_true)
    groups = [np.flatnonzero(y_true == value) for value in np.unique(y_true)] if stratified else []
    values = []
    for _ in range(rounds):
        idx = np.concatenate([rng.choice(g, len(g)) for g in groups]) if stratified else rng.integers(0, n, n)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # one-class resamples: undefined, skipped below
                value = metric(y_true[idx], y_score[idx])
        except ValueError:
            continue
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def calibration_bins(y_true: np.ndarray, prob: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Reliability table: per probability bin, mean predicted probability, observed rate, count.

    ``y_true``: 0/1 labels, shape (n,); ``prob``: predicted probabilities in [0, 1], shape (n,).
    ``bins`` equal-width bins over [0, 1]; one dict per non-empty bin, in order, with ``low`` and
    ``high`` (its edges), ``mean_prob`` and ``observed`` (both 0-1) and ``count`` (rows).
    """
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    table = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "mean_prob": float(prob[mask].mean()),
                          "observed": float(y_true[mask].mean()), "count": int(mask.sum())})
    return table


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5, rounds: int = 1000) -> dict[str, Any]:
    """Metrics of a binary classifier: ``y_true`` 0/1 labels, shape (n,); ``prob`` the predicted
    probability of 1, shape (n,), in [0, 1].

    Returns ``n``; ``accuracy`` (0-1, ``prob >= threshold`` counts as 1); ``roc_auc`` (0-1, nan with one
    class only) and ``roc_auc_ci95`` (its 95% bootstrap interval over ``rounds`` resamples); ``pr_auc``
    (average precision, 0-1, nan without positives); ``brier`` (mean squared error of ``prob``, 0-1,
    lower is better); ``positive_rate`` (share of 1s); ``calibration`` (:func:`calibration_bins`).
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    y_true = np.asarray(y_true, dtype=int)
    prob = np.asarray(prob, dtype=float)
    auc = float(roc_auc_score(y_true, prob)) if len(np.unique(y_true)) > 1 else float("nan")
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean((prob >= threshold) == y_true)),
        "roc_auc": auc,
        "roc_auc_ci95": bootstrap_interval(roc_auc_score, y_true, prob, rounds),
        "pr_auc": float(average_precision_score(y_true, prob)) if y_true.any() else float("nan"),
        "brier": float(brier_score_loss(y_true, prob)),
        "positive_rate": float(y_true.mean()),
        "calibration": calibration_bins(y_true, prob),
    }


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two (n,) arrays; ``ValueError`` where either is constant."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError("constant input")
    return float(spearmanr(a, b).statistic)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, rounds: int = 1000) -> dict[str, Any]:
    """Metrics of a regression: ``y_true`` and ``y_pred`` both shape (n,), in the label's units
    (popularity, 0-100).

    Returns ``n``; ``mse`` (squared units) and ``mae`` (units), lower is better; ``spearman`` (rank
    correlation, -1 to 1, nan where either side is constant) and ``spearman_ci95`` (its 95% bootstrap
    interval over ``rounds`` resamples).
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    try:
        spearman = _spearman(y_true, y_pred)
    except ValueError:
        spearman = float("nan")
    return {
        "n": int(len(y_true)),
        "mse": float(np.mean((y_true - y_pred) ** 2)),
        "mae": float(np.mean(np.abs(y_true - y_pred))),
        "spearman": spearman,
        "spearman_ci95": bootstrap_interval(_spearman, y_true, y_pred, rounds),
    }


def _accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Share of rows whose most probable class is the true one: ``y_true`` (n,), ``probs`` (n, classes)."""
    return float(np.mean(probs.argmax(axis=1) == y_true))


def _macro_f1(y_true: np.ndarray, probs: np.ndarray) -> float:
    """F1 of the most probable class, averaged over the classes that occur among the true or the predicted
    classes: ``y_true`` (n,) class indices, ``probs`` (n, classes). A class never predicted counts 0; a
    class with no row in ``y_true`` and never predicted (a small class the grouped split kept out of the
    test set) does not count. Scikit-learn's ``f1_score(average="macro", zero_division=0)``, in numpy: the
    bootstrap calls it a thousand times."""
    classes = probs.shape[1]
    confusion = np.bincount(y_true * classes + probs.argmax(axis=1), minlength=classes * classes)
    confusion = confusion.reshape(classes, classes)
    tp = np.diag(confusion).astype(float)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)  # 2 tp + fp + fn
    seen = denominator > 0
    return float(np.mean(2 * tp[seen] / denominator[seen])) if seen.any() else float("nan")


def multiclass_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str] | None = None,
                       rounds: int = 1000) -> dict[str, Any]:
    """Metrics of a classifier over several classes: ``y_true`` class indices, shape (n,); ``probs``
    class probabilities, shape (n, classes); ``labels`` the class names (default ``"0"``, ``"1"``, ...).

    Returns ``n``; ``accuracy`` and ``top3_accuracy`` (the true class among the three most probable),
    both 0-1; ``macro_f1`` (F1 averaged over the classes among the true or predicted ones, 0-1, a class
    never predicted counting 0); ``accuracy_ci95`` and ``macro_f1_ci95`` (their 95% bootstrap intervals
    over ``rounds`` resamples of the test rows, (low, high)); ``confusion`` (classes x classes counts, true
    classes as rows, predicted as columns); ``labels``.
    """
    from sklearn.metrics import confusion_matrix

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    top3 = np.argsort(-probs, axis=1)[:, : min(3, classes)]
    return {
        "n": int(len(y_true)),
        "accuracy": _accuracy(y_true, probs),
        "accuracy_ci95": bootstrap_interval(_accuracy, y_true, probs, rounds),
        "top3_accuracy": float(np.mean([t in row for t, row in zip(y_true, top3)])),
        "macro_f1": _macro_f1(y_true, probs),
        # resampled within each class: every class of the split keeps its rows, so the average is over the
        # same classes as the estimate's (a plain resample drops small classes and biases the interval)
        "macro_f1_ci95": bootstrap_interval(_macro_f1, y_true, probs, rounds, stratified=True),
        "confusion": confusion_matrix(y_true, pred, labels=list(range(classes))).tolist(),
        "labels": labels or [str(i) for i in range(classes)],
    }


def evaluate(task: str, y_true: np.ndarray, prediction: np.ndarray, labels: list[str] | None = None,
             rounds: int = 1000) -> dict[str, Any]:
    """The metrics of ``task`` (``binary``, ``regression`` or ``multiclass``) for model outputs
    ``prediction``, shape (n, 1) or (n, classes), against ``y_true``, shape (n,): the dict of
    :func:`binary_metrics`, :func:`regression_metrics` or :func:`multiclass_metrics`."""
    prediction = np.asarray(prediction, dtype=float)
    if task == "binary":
        return binary_metrics(y_true, prediction.reshape(-1), rounds=rounds)
    if task == "regression":
        return regression_metrics(y_true, prediction.reshape(-1), rounds=rounds)
    return multiclass_metrics(y_true, prediction, labels, rounds=rounds)


def baseline_prediction(task: str, train_labels: np.ndarray, n: int, n_classes: int = 2) -> np.ndarray:
    """What the dummy baseline predicts for every one of ``n`` rows, from the training split's
    labels ``train_labels`` (shape (m,)): the class prior, shape (n, n_classes), for ``multiclass``;
    the mean label (the share of 1s for ``binary``), shape (n, 1), otherwise."""
    train_labels = np.asarray(train_labels, dtype=float)
    if task == "multiclass":
        prior = np.bincount(train_labels.astype(int), minlength=n_classes) / max(len(train_labels), 1)
        return np.tile(prior, (n, 1))
    return np.full((n, 1), float(train_labels.mean()))


#: Headline metrics per task, in table order: (key, label, higher is better).
HEADLINES = {
    "binary": [("roc_auc", "ROC-AUC", True), ("pr_auc", "PR-AUC", True), ("accuracy", "accuracy", True),
               ("brier", "Brier", False)],
    "regression": [("spearman", "Spearman", True), ("mae", "MAE", False), ("mse", "MSE", False)],
    "multiclass": [("accuracy", "accuracy", True), ("top3_accuracy", "top-3 accuracy", True),
                   ("macro_f1", "macro-F1", True)],
}


def comparison_rows(task: str, model: dict[str, Any], baseline: dict[str, Any]) -> list[list[str]]:
    """Rows of the printed table, one per headline metric of ``task`` (:data:`HEADLINES`): metric name,
    the model's value (with its 95% interval where there is one) and the dummy's, as text."""
    return [[label, metric_text(model, key), f"{baseline[key]:.3f}"] for key, label, _ in HEADLINES[task]]


def metric_text(metrics: dict[str, Any], key: str) -> str:
    """``metrics[key]`` as text with three decimals, followed by its 95% interval ``metrics[key + "_ci95"]``
    as ``[low, high]`` where there is a finite one: ``"0.612 [0.480, 0.735]"``."""
    value = f"{metrics[key]:.3f}"
    interval = metrics.get(f"{key}_ci95")
    if interval and all(np.isfinite(interval)):
        value += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    return value
