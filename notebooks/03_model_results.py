# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Model results
# MAGIC Every `train_model` run logs to MLflow its test-split evaluation against the dummy baseline (the
# MAGIC training prior): `evaluation/metrics.json` (metrics with bootstrap 95% intervals) and
# MAGIC `evaluation/test_predictions.csv`. This notebook takes the newest finished run of each target and
# MAGIC family and shows the test metrics across families (a table and a bar chart), the ROC curves and
# MAGIC reliability diagrams of the binary models, and a confusion matrix per classifier.
# MAGIC
# MAGIC Runs on Databricks (the `conf` widget names the config; runs come from the workspace's MLflow)
# MAGIC and locally: `HITPREDICT_CONF=conf/local.yaml .venv/bin/python notebooks/03_model_results.py`
# MAGIC (figures go to `data/notebooks/03_model_results/`). It needs no Spark.

# COMMAND ----------

NOTEBOOK = "03_model_results"

# COMMAND ----------

# Setup (the same cell in every notebook): the config, the output folder, and display() where the platform has none.
from hitpredict.keras_compat import ensure_keras2

ensure_keras2()  # Keras 2 in this process before anything imports TensorFlow

from hitpredict.notebook import open_notebook
from hitpredict.plotting import PLAIN_TEXT, pyplot

notebook = open_notebook(NOTEBOOK, globals())
config, OUT = notebook.config, notebook.out
plt = pyplot()


def display(obj):
    """The platform's display(); in plain Python a figure is saved (its path printed) or a table printed."""
    text = notebook.display(obj)
    if text is not None:
        print(text)


def show(fig, name):
    """Show a matplotlib figure (in plain Python saved as OUT/<name>.png), then close it."""
    fig.set_label(name)
    display(fig)
    plt.close(fig)


def show_image(path):
    """Show a PNG that product code drew (the report's, training's plots): inline on Databricks, else its path."""
    text = notebook.show_image(path)
    if text is not None:
        print(text)


print(f"config {config.source}, lake {config.lake.engine} at {config.lake.root}")

# COMMAND ----------

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from mlflow.exceptions import MlflowException

from hitpredict.evaluation import HEADLINES
from hitpredict.train import plots
from hitpredict.train.tracking import configure

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per download is noise here
configure(config.mlflow)  # the config's tracking store: a SQLite database locally, the workspace on Databricks
runs = mlflow.search_runs(experiment_names=[config.mlflow.experiment], filter_string="attributes.status = 'FINISHED'",
                          order_by=["attributes.start_time DESC"])
print(f"{len(runs)} finished runs in experiment {config.mlflow.experiment!r}")
for column in ("params.target", "params.family"):  # runs logged by other code may lack them
    if column not in runs:
        runs[column] = None
latest = runs.drop_duplicates(["params.target", "params.family"]) if len(runs) else runs  # newest first
results = []
for _, run in latest.iterrows():
    folder = OUT / "runs" / run["run_id"]
    try:
        evaluation = Path(mlflow.artifacts.download_artifacts(run_id=run["run_id"], artifact_path="evaluation",
                                                              dst_path=str(folder)))
        metrics = json.loads((evaluation / "metrics.json").read_text())
    except (OSError, MlflowException) as exc:
        print(f"run {run['run_id']}: no evaluation ({type(exc).__name__}); skipped")
        continue
    predictions = evaluation / "test_predictions.csv"
    results.append({"run_id": run["run_id"], "target": run["params.target"] or metrics["task"],
                    "family": metrics["family"], "task": metrics["task"], "dataset": metrics["dataset_id"],
                    "model": metrics["model"], "dummy": metrics["dummy"],
                    "epochs": len(metrics["history"].get("loss", [])),
                    "predictions": pd.read_csv(predictions) if predictions.is_file() else None})
print(f"{len(results)} models: newest run of each target and family")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Test metrics across families
# MAGIC Splits are grouped by artist, so these are scores on artists the model never heard. The interval is
# MAGIC the bootstrap 95% interval over the test tracks.

# COMMAND ----------

def interval(values):
    return f"[{values[0]:.3f}, {values[1]:.3f}]" if values and all(np.isfinite(values)) else ""


order = {"binary": 0, "regression": 1, "multiclass": 2}
results.sort(key=lambda r: (order[r["task"]], r["target"], -r["model"][HEADLINES[r["task"]][0][0]]))
print(f"{'target':<11} {'family':<10} {'metric':<9} {'model':>7} {'95% interval':>16} {'dummy':>7} {'n':>5} "
      f"{'epochs':>6}")
for r in results:
    key, label, _ = HEADLINES[r["task"]][0]
    print(f"{r['target']:<11} {r['family']:<10} {label:<9} {r['model'][key]:>7.3f} "
          f"{interval(r['model'].get(f'{key}_ci95')):>16} {r['dummy'][key]:>7.3f} {r['model']['n']:>5} "
          f"{r['epochs']:>6}")
for task in order:  # one table per task: its headline metrics, the model's and the dummy's
    rows = [{"target": r["target"], "family": r["family"],
             **{label: round(r["model"][key], 4) for key, label, _ in HEADLINES[task]},
             **{f"dummy {label}": round(r["dummy"][key], 4) for key, label, _ in HEADLINES[task]},
             "test rows": r["model"]["n"], "run_id": r["run_id"]} for r in results if r["task"] == task]
    if rows:
        display(pd.DataFrame(rows))

# COMMAND ----------

tasks = [task for task in order if any(r["task"] == task for r in results)]
if tasks:
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        key, label, higher = HEADLINES[task][0]
        rows = [r for r in results if r["task"] == task]
        names = [f"{r['target']}\n{r['family']}" for r in rows]
        values = np.array([r["model"][key] for r in rows])
        ci = [r["model"].get(f"{key}_ci95") or [np.nan, np.nan] for r in rows]
        errors = np.nan_to_num(np.abs(np.array([[v - c[0] for v, c in zip(values, ci)],
                                                [c[1] - v for v, c in zip(values, ci)]])))
        ax.bar(range(len(rows)), values, yerr=errors, capsize=4, color="C0", label="model (95% interval)")
        ax.scatter(range(len(rows)), [r["dummy"][key] for r in rows], marker="_", s=600, color="C1", zorder=3,
                   label="dummy baseline")
        ax.set_xticks(range(len(rows)), names, fontsize=8, **PLAIN_TEXT)
        ax.set_ylabel(f"test {label}" + ("" if higher else " (lower is better)"))
        ax.set_title(f"{task} targets")
        ax.legend(fontsize=7, loc="best")
    show(fig, "test_metrics")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Binary models: ROC and calibration
# MAGIC The ROC curve of each binary model on its test split, and its reliability diagram: per probability
# MAGIC bin, the share that really is positive (a calibrated model sits on the diagonal).

# COMMAND ----------

from sklearn.metrics import confusion_matrix, roc_curve

binary = [r for r in results if r["task"] == "binary" and r["predictions"] is not None]
if binary:
    fig, ax = plt.subplots(figsize=(5, 5))
    for r in binary:
        fpr, tpr, _ = roc_curve(r["predictions"]["label"].astype(int), r["predictions"]["prediction_0"])
        ax.plot(fpr, tpr, label=f"{r['target']} {r['family']} (AUC {r['model']['roc_auc']:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="dummy (AUC 0.5)")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC on the test split")
    ax.legend(fontsize=8, loc="lower right")
    show(fig, "roc")
for r in binary:
    prior = r["dummy"]["calibration"][0]["mean_prob"] if r["dummy"]["calibration"] else r["model"]["positive_rate"]
    show_image(plots.calibration_plot(r["model"]["calibration"], prior,
                                      OUT / f"calibration_{r['target']}_{r['family']}.png"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Confusion matrices
# MAGIC True classes as rows, predicted as columns. Binary models are cut at probability 0.5.

# COMMAND ----------

for r in results:
    path = OUT / f"confusion_{r['target']}_{r['family']}.png"
    if r["task"] == "multiclass":
        show_image(plots.confusion_plot(r["model"]["confusion"], r["model"]["labels"], path))
    elif r["task"] == "binary" and r["predictions"] is not None:
        truth = r["predictions"]["label"].astype(int)
        predicted = (r["predictions"]["prediction_0"] >= 0.5).astype(int)
        matrix = confusion_matrix(truth, predicted, labels=[0, 1]).tolist()
        show_image(plots.confusion_plot(matrix, [f"not {r['target']}", r["target"]], path))
    elif r["task"] == "regression" and r["predictions"] is not None:
        show_image(plots.regression_plot(r["predictions"]["label"].to_numpy(float),
                                         r["predictions"]["prediction_0"].to_numpy(float),
                                         OUT / f"predictions_{r['target']}_{r['family']}.png"))
