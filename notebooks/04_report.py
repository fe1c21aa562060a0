# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · The catalogue report
# MAGIC What `score_catalogue` found: the tracks with the most hit potential, how the scores spread over the
# MAGIC catalogue (percentiles in each model's reference distribution), what makes the top tracks score
# MAGIC (segment importance: the score drop when a segment is replaced by the training mean), and, where an
# MAGIC artist or region model scored the catalogue, the artists it sounds like and its regional style.
# MAGIC It writes the same report as `hitpredict report` (HTML, PNGs, CSV) and shows its parts here.
# MAGIC
# MAGIC Runs on Databricks (the `conf` widget names the config) and locally:
# MAGIC `HITPREDICT_CONF=conf/local.yaml .venv/bin/python notebooks/04_report.py` (figures and the report go
# MAGIC to `data/notebooks/04_report/`).

# COMMAND ----------

NOTEBOOK = "04_report"

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

import numpy as np
import pandas as pd

from hitpredict.lake import open_lake
from hitpredict.scoring.report import similar_text, write_report
from hitpredict.spark import get_spark

spark = get_spark(config.spark)  # on Databricks, the notebook's session
lake = open_lake(config.lake, spark)
s = config.score
report = write_report(lake, OUT / "report", top=s.report_top, strips=s.report_strips, segment_seconds=s.segment_seconds)
tracks = report.tracks  # one row per track, best first, from each model name's newest scored version
models = sorted({m for text in tracks["models"] for m in text.split(", ")})
print(f"{len(tracks)} scored tracks; models: {', '.join(models)}")
print(f"report: {report.html} ({len(report.images)} images), table: {report.csv}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Top tracks

# COMMAND ----------

column = "prob_popular" if tracks["prob_popular"].notna().any() else "popularity_pred"
label = "P(popular)" if column == "prob_popular" else "predicted popularity"
top = tracks.head(min(s.report_top, 20))
view = pd.DataFrame({"rank": range(1, len(top) + 1), "title": top["title"], "artist": top["primary_artist"],
                     label: top[column].astype(float).round(3), "percentile": top["percentile"].astype(float).round(1),
                     "sounds like": top["similar_artists"].map(similar_text), "region": top["region"]})
for row in view.head(3).itertuples(index=False):
    print(f"#{row.rank} {row.title} by {row.artist}: {label} {row[3]:.3f}, percentile {row.percentile:.1f}")
display(view)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Score percentiles
# MAGIC The score's quantiles over this catalogue, and each track's percentile in the model's reference
# MAGIC distribution (its predictions on the training split).

# COMMAND ----------

scored = tracks[tracks[column].notna()]
values = scored[column].to_numpy(dtype=float)
levels = [10, 25, 50, 75, 90, 95, 99]
quantiles = pd.DataFrame({"catalogue percentile": levels, label: np.percentile(values, levels).round(4),
                          "reference percentile": np.percentile(scored["percentile"].astype(float).fillna(0),
                                                                levels).round(1)})
print(f"{label} over {len(values)} tracks: " + ", ".join(f"p{q} {v:.3f}" for q, v in zip(levels, quantiles[label])))
display(quantiles)
for path in report.images:
    if not path.stem.startswith("strip"):
        show_image(path)  # the score histogram and the percentile curve, as the report draws them

# COMMAND ----------

# MAGIC %md
# MAGIC ## What makes the top tracks score
# MAGIC Each strip: the track's log-mel spectrogram and, under it, each segment's importance (red raises the
# MAGIC score, blue lowers it).

# COMMAND ----------

explained = top[top["segment_importance"].notna()]
strongest = []
for t in explained.itertuples(index=False):
    importance = np.asarray(t.segment_importance, dtype=float)
    best = int(np.argmax(importance))
    strongest.append({"title": t.title, "artist": t.primary_artist,
                      "strongest segment (s)": f"{best * s.segment_seconds:g}-{(best + 1) * s.segment_seconds:g}",
                      "raises the score by": round(float(importance[best]), 4)})
print(f"explained: {len(explained)} of the top {len(top)} tracks")
if strongest:
    display(pd.DataFrame(strongest))
strips = [path for path in report.images if path.stem.startswith("strip")]
for path in strips:
    show_image(path)
print(f"importance strips: {len(strips)}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Similar artists and region
# MAGIC Shown when an `artist` or a `region` model scored the catalogue.

# COMMAND ----------

from hitpredict.plotting import PLAIN_TEXT

nearest = tracks["similar_artists"].dropna().map(lambda v: v[0]["artist"] if len(v) else None).dropna()
regions = tracks["region"].dropna()
panels = [(name, series) for name, series in (("sounds most like", nearest), ("regional style", regions))
          if len(series)]
for name, series in panels:
    print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in series.value_counts().head(5).items()))
if panels:
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels):
        counts = series.value_counts().head(15)[::-1]
        ax.barh(range(len(counts)), counts.to_numpy(), color="#3b6ea8")
        ax.set_yticks(range(len(counts)), [str(k) for k in counts.index], fontsize=8, **PLAIN_TEXT)
        ax.set_xlabel("tracks")
        ax.set_title(f"{name} ({len(series)} tracks)")
    show(fig, "artists_and_regions")
    if len(regions) and column == "prob_popular":
        by_region = (tracks[tracks["region"].notna()].groupby("region")[column]
                     .agg(tracks="count", mean="mean", best="max").round(3).reset_index())
        display(by_region)
else:
    print("no artist or region model has scored this catalogue")
