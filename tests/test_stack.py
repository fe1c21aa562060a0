"""The pinned stack works together: Petastorm -> Horovod (gloo, 2 processes) -> Keras."""
from __future__ import annotations

import queue

import horovod.common.util
import pytest

from hitpredict.stackcheck import INTERCEPT, SLOPE, run_horovod_smoke


@pytest.mark.slow
def test_two_gloo_processes_train_a_keras_model_from_a_petastorm_converter(spark, tmp_path, monkeypatch):
    # Horovod's own gloo check forks this (JVM- and TF-threaded) process; a child that dies there
    # surfaces as a bare queue.Empty (seen on CI). The launcher must not depend on it.
    def forked_child_died(*args, **kwargs):
        raise queue.Empty

    monkeypatch.setattr(horovod.common.util, "_check_extension_lambda", forked_child_died)
    results = run_horovod_smoke(spark, num_proc=2, cache_dir=str(tmp_path / "petastorm"))

    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["size"] == 2 for r in results)
    # Gradients were averaged: both ranks end with the same weights...
    assert results[0]["slope"] == pytest.approx(results[1]["slope"], abs=1e-6)
    assert results[0]["intercept"] == pytest.approx(results[1]["intercept"], abs=1e-6)
    # ...and those weights learned the planted relation from the Petastorm shards.
    assert results[0]["slope"] == pytest.approx(SLOPE, abs=0.1)
    assert results[0]["intercept"] == pytest.approx(INTERCEPT, abs=0.1)
    assert results[0]["loss"][-1] < results[0]["loss"][0] / 10
