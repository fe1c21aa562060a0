# Databricks notebook source
# MAGIC %md
# MAGIC # Compare trained models
# MAGIC Every `train_model` run logs its test-split metrics (with bootstrap 95% intervals) and
# MAGIC the dummy baseline's to MLflow. This notebook lists the runs of the experiment and
# MAGIC plots the headline metric of each model family against the dummy. Runs locally
# MAGIC (`.venv/bin/python notebooks/02_compare_models.py`) and on Databricks.

# COMMAND ----------

import json
import os
from pathlib import Path

from hitpredict.keras_compat import ensure_keras2

ensure_keras2()  # Keras 2 for every model this notebook loads, before anything imports TensorFlow

import mlflow

from hitpredict.config import load_config
from hitpredict.evaluation import HEADLINES
from hitpredict.train.tracking import configure

CONF = os.environ.get("HITPREDICT_CONF", "conf/local.yaml")
config = load_config(CONF)
configure(config.mlflow)
runs = mlflow.search_runs(experiment_names=[config.mlflow.experiment], order_by=["start_time DESC"])
print(f"{len(runs)} runs in experiment {config.mlflow.experiment!r}")

# COMMAND ----------

rows = []
for _, run in runs.iterrows():
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run["run_id"], artifact_path="evaluation"))
    result = json.loads((folder / "metrics.json").read_text())
    key, label, _ = HEADLINES[result["task"]][0]
    rows.append({"family": result["family"], "task": result["task"], "dataset": result["dataset_id"],
                 "metric": label, "model": result["model"][key], "ci95": result["model"].get(f"{key}_ci95"),
                 "dummy": result["dummy"][key], "epochs": len(result["history"].get("loss", [])),
                 "run_id": run["run_id"]})
latest = {}
for row in rows:  # newest first: keep each (task, family)'s latest run
    latest.setdefault((row["task"], row["family"]), row)
table = sorted(latest.values(), key=lambda r: (r["task"], -r["model"]))
print(f"{'family':<10} {'task':<10} {'metric':<9} {'model':>7} {'95% interval':>16} {'dummy':>7} {'epochs':>6}")
for r in table:
    ci = f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if r["ci95"] else ""
    print(f"{r['family']:<10} {r['task']:<10} {r['metric']:<9} {r['model']:>7.3f} {ci:>16} {r['dummy']:>7.3f} "
          f"{r['epochs']:>6}")

# COMMAND ----------

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

binary = [r for r in table if r["task"] == "binary"]
if binary:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["family"] for r in binary]
    values = [r["model"] for r in binary]
    errors = [[v - (r["ci95"] or (v, v))[0] for v, r in zip(values, binary)],
              [(r["ci95"] or (v, v))[1] - v for v, r in zip(values, binary)]]
    ax.bar(names, values, yerr=errors, capsize=4, color="C0", label="model (95% bootstrap interval)")
    ax.axhline(binary[0]["dummy"], color="C1", linestyle=":", label="dummy baseline")
    ax.set_ylim(0.4, 1.0)
    ax.set_ylabel("test ROC-AUC")
    ax.set_title("Popular or not: test split, grouped by artist")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(config.train.output_dir) / "compare_models.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"plot: {out}")
