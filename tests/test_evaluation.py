"""Evaluation metrics: correct values, honest intervals, calibration tables."""
from __future__ import annotations

import numpy as np
import pytest

from hitpredict.evaluation import binary_metrics, bootstrap_interval, multiclass_metrics, regression_metrics


def test_binary_metrics_on_a_known_case():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = binary_metrics(y, p, rounds=200)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert sum(b["count"] for b in m["calibration"]) == 4


def test_auc_interval_contains_the_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(0)

    def sample(n):
        y = rng.integers(0, 2, n)
        return y, np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, n), 0, 1)

    small, large = binary_metrics(*sample(100), rounds=300), binary_metrics(*sample(2000), rounds=300)
    for m in (small, large):
        low, high = m["roc_auc_ci95"]
        assert low <= m["roc_auc"] <= high
    assert np.diff(large["roc_auc_ci95"])[0] < np.diff(small["roc_auc_ci95"])[0] / 2


def test_calibrated_probabilities_match_observed_rates():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, 20000) < p).astype(int)
    for row in binary_metrics(y, p, rounds=10)["calibration"]:
        assert row["observed"] == pytest.approx(row["mean_prob"], abs=0.04)


def test_regression_metrics():
    y = np.array([1.0, 2, 3, 4, 5])
    m = regression_metrics(y, y * 2, rounds=200)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(3.0) and m["mse"] == pytest.approx(11.0)
    assert np.isnan(regression_metrics(y, np.ones(5), rounds=10)["spearman"])  # constant predictions


def test_multiclass_metrics():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.3, 0.4, 0.3]])
    m = multiclass_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.5) and m["top3_accuracy"] == 1.0
    assert m["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert 0 < m["macro_f1"] < 1


def test_bootstrap_skips_undefined_resamples():
    from sklearn.metrics import roc_auc_score

    low, high = bootstrap_interval(roc_auc_score, np.array([0, 1]), np.array([0.2, 0.9]), rounds=50)
    assert low == high == 1.0
