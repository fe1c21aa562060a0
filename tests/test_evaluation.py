"""Evaluation metrics: correct values, honest intervals, calibration tables."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hitpredict.evaluation import (baseline_prediction, binary_metrics, bootstrap_interval, comparison_rows,
                                   multiclass_metrics, regression_metrics)


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
    m = multiclass_metrics(y, probs, ["a", "b", "c"], rounds=200)
    assert m["accuracy"] == pytest.approx(0.5) and m["top3_accuracy"] == 1.0
    assert m["confusion"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert 0 < m["macro_f1"] < 1


def test_macro_f1_is_scikit_learns():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    for classes, n in [(2, 1), (3, 5), (10, 7), (10, 60)]:  # small n: classes absent from truth or predictions
        y, probs = rng.integers(0, classes, n), rng.random((n, classes))
        expected = f1_score(y, probs.argmax(axis=1), average="macro", zero_division=0)
        assert multiclass_metrics(y, probs, rounds=10)["macro_f1"] == pytest.approx(expected, abs=1e-12)


def test_a_class_missing_from_the_test_split_and_never_predicted_does_not_count():
    y = np.array([0, 0, 1, 1])                                   # class 2 exists, but not in this test split
    perfect = np.eye(3)[y]
    assert multiclass_metrics(y, perfect, rounds=10)["macro_f1"] == 1.0
    wrong = np.eye(3)[[0, 0, 1, 2]]                              # predicted once: it counts, with F1 0
    assert multiclass_metrics(y, wrong, rounds=10)["macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def _noisy_classifier(rng: np.random.Generator, n: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Labels and class probabilities that are right about 60% of the time."""
    y = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), y] += 1.2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def test_multiclass_intervals_contain_the_estimate_and_narrow_with_more_data():
    rng = np.random.default_rng(0)
    small = multiclass_metrics(*_noisy_classifier(rng, 40), rounds=400)
    large = multiclass_metrics(*_noisy_classifier(rng, 2000), rounds=400)
    for m in (small, large):
        for key in ("accuracy", "macro_f1"):
            low, high = m[f"{key}_ci95"]
            assert 0 <= low < m[key] < high <= 1
    for key in ("accuracy", "macro_f1"):
        # a 50x larger test set: the interval about 7x narrower (1/sqrt(50)); at least 4x here
        assert np.diff(large[f"{key}_ci95"])[0] < np.diff(small[f"{key}_ci95"])[0] / 4
    # a few dozen clips: the interval is wide, which is why it is reported
    assert np.diff(small["accuracy_ci95"])[0] > 0.2


def test_multiclass_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(100):
        y = rng.integers(0, 3, 50)
        right = rng.uniform(0, 1, 50) < 0.6                      # true accuracy 0.6
        pred = np.where(right, y, (y + rng.integers(1, 3, 50)) % 3)
        low, high = multiclass_metrics(y, np.eye(3)[pred], rounds=300)["accuracy_ci95"]
        hits += low <= 0.6 <= high
    assert 85 <= hits <= 100


def test_multiclass_metrics_are_json_ready_and_the_table_shows_the_intervals():
    rng = np.random.default_rng(2)
    y, probs = _noisy_classifier(rng, 60)
    model = multiclass_metrics(y, probs, ["a", "b", "c", "d"], rounds=200)
    dummy = multiclass_metrics(y, baseline_prediction("multiclass", y, len(y), 4), rounds=200)
    again = json.loads(json.dumps(model))
    assert again["accuracy_ci95"] == list(model["accuracy_ci95"]) and again["labels"] == ["a", "b", "c", "d"]
    rows = {row[0]: row for row in comparison_rows("multiclass", model, dummy)}
    for label, key in (("accuracy", "accuracy"), ("macro-F1", "macro_f1")):
        low, high = model[f"{key}_ci95"]
        assert rows[label][1] == f"{model[key]:.3f} [{low:.3f}, {high:.3f}]"
    assert rows["top-3 accuracy"][1] == f"{model['top3_accuracy']:.3f}"   # no interval: none is computed


def test_bootstrap_skips_undefined_resamples():
    from sklearn.metrics import roc_auc_score

    low, high = bootstrap_interval(roc_auc_score, np.array([0, 1]), np.array([0.2, 0.9]), rounds=50)
    assert low == high == 1.0


def test_the_confusion_plot_carries_the_metrics_with_their_intervals(tmp_path):
    from hitpredict.plotting import pyplot
    from hitpredict.train import plots

    plt = pyplot()
    drawn: list[str] = []
    original = plt.Axes.set_title
    try:
        plt.Axes.set_title = lambda self, text, *a, **k: drawn.append(text) or original(self, text, *a, **k)
        plots.confusion_plot([[3, 1], [0, 2]], ["a", "b"], tmp_path / "c.png", "accuracy 0.833 [0.500, 1.000]")
    finally:
        plt.Axes.set_title = original
    assert drawn == ["Confusion on the test split\naccuracy 0.833 [0.500, 1.000]"]
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_macro_f1_interval_holds_its_estimate_when_classes_have_one_or_two_test_rows():
    """The demo's artist split: 20 classes of 1-2 test rows. A plain resample drops whole classes (they then
    count 0, or not at all), which put the estimate outside its own interval (0.497 [0.215, 0.487]);
    resampling within each class keeps every class in every resample."""
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = np.repeat(np.arange(20), rng.integers(1, 3, 20))
        probs = rng.random((len(y), 20))
        probs[np.arange(len(y)), y] += rng.random(len(y)) * 1.2
        metrics = multiclass_metrics(y, probs / probs.sum(axis=1, keepdims=True), rounds=300)
        low, high = metrics["macro_f1_ci95"]
        assert low <= metrics["macro_f1"] <= high, (metrics["macro_f1"], low, high)
