# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Features
# MAGIC What `extract_features` stored: which tracks decoded (and why the others did not), a few log-mel
# MAGIC spectrograms as the models see them (time in seconds, frequency in Hz on the mel scale), and how the
# MAGIC 62 summary features (MFCC, chroma, spectral contrast, centroid, tempo, loudness) that the `logreg`
# MAGIC and `mlp` families read correlate with each other and with popularity.
# MAGIC
# MAGIC Runs on Databricks (the `conf` widget names the config) and locally:
# MAGIC `HITPREDICT_CONF=conf/local.yaml .venv/bin/python notebooks/02_features.py` (figures go to
# MAGIC `data/notebooks/02_features/`).

# COMMAND ----------

NOTEBOOK = "02_features"

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
from pyspark.sql import functions as F

from hitpredict.audio_params import AudioParams
from hitpredict.features import SUMMARY_LAYOUT, SUMMARY_SIZE, decode_mel
from hitpredict.lake import open_lake
from hitpredict.spark import get_spark

spark = get_spark(config.spark)  # on Databricks, the notebook's session
lake = open_lake(config.lake, spark)
features = lake.read("features")
status = (features.groupBy("status", F.coalesce("error_kind", F.lit("")).alias("error_kind"))
          .agg(F.count("*").alias("tracks"), F.round(F.avg("duration_s"), 1).alias("mean_duration_s"))
          .orderBy(F.desc("tracks")).toPandas())
ok_count = int(status.loc[status["status"] == "ok", "tracks"].sum())
print(f"features: {ok_count} ok of {int(status['tracks'].sum())} tracks")
display(status)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Spectrograms
# MAGIC The two most and the two least popular tracks with features: the stored float16 log-mel (dB), the
# MAGIC centre window the models read.

# COMMAND ----------

import librosa.display

from hitpredict.plotting import PLAIN_TEXT

catalogue = lake.read("catalogue").select("track_id", "title", "primary_artist", "popularity")
ok = features.where(F.col("status") == "ok").select("track_id", "mel", "mel_shape", "audio_params")
ranked = ok.join(catalogue, "track_id", "left")
picked = (ranked.orderBy(F.desc_nulls_last("popularity"), "track_id").limit(2).collect()
          + ranked.orderBy(F.asc_nulls_last("popularity"), "track_id").limit(2).collect())
picked = list({row.track_id: row for row in picked}.values())
if picked:
    fig, axes = plt.subplots(len(picked), 1, figsize=(9, 2.6 * len(picked)), squeeze=False)
    for ax, row in zip(axes[:, 0], picked):
        params = AudioParams.from_json(row.audio_params)
        mel = decode_mel(row.mel, row.mel_shape).astype(np.float32)
        image = librosa.display.specshow(mel, sr=params.sample_rate, hop_length=params.hop_length, x_axis="time",
                                         y_axis="mel", fmax=params.sample_rate / 2, cmap="magma", ax=ax)
        popularity = "?" if row.popularity is None else f"{row.popularity:g}"
        ax.set_title(f"{row.title or row.track_id} ({row.primary_artist or 'unknown artist'}), popularity "
                     f"{popularity}", fontsize=9, **PLAIN_TEXT)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (Hz, mel scale)")
        fig.colorbar(image, ax=ax, format="%+2.0f dB")
    print(f"spectrograms: {len(picked)} tracks, {mel.shape[0]} mel bands x {mel.shape[1]} frames "
          f"({mel.shape[1] * params.hop_length / params.sample_rate:.1f} s at {params.sample_rate} Hz)")
    show(fig, "spectrograms")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Summary features
# MAGIC Pairwise (Pearson) correlations over a sample of up to 5,000 tracks, and each feature's rank
# MAGIC (Spearman) correlation with popularity.

# COMMAND ----------

names = [key if size == 1 else f"{key}_{i + 1:02d}" for key, size in SUMMARY_LAYOUT.items() for i in range(size)]
sample = (features.where(F.col("status") == "ok").select("track_id", "summary")
          .join(catalogue.select("track_id", "popularity"), "track_id", "left"))
fraction = min(1.0, 5000 / max(ok_count, 1))
rows = (sample if fraction >= 1 else sample.sample(fraction=fraction, seed=13)).toPandas()
vectors = np.stack(rows["summary"].to_numpy()) if len(rows) else np.zeros((0, SUMMARY_SIZE), np.float32)
if vectors.shape[1] != len(names):  # features from another release of the summary layout
    names = [f"summary_{i:02d}" for i in range(vectors.shape[1])]
summary = pd.DataFrame(vectors, columns=names)
correlation = summary.corr().fillna(0.0)
print(f"summary features: {len(summary)} tracks x {summary.shape[1]} values")
fig, ax = plt.subplots(figsize=(10, 8.5))
image = ax.imshow(correlation.to_numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
ax.set_xticks(range(len(names)), names, rotation=90, fontsize=5)
ax.set_yticks(range(len(names)), names, fontsize=5)
edges = np.cumsum(list(SUMMARY_LAYOUT.values()))[:-1] - 0.5 if len(names) == SUMMARY_SIZE else []
for edge in edges:  # the feature groups
    ax.axhline(edge, color="black", linewidth=0.6)
    ax.axvline(edge, color="black", linewidth=0.6)
fig.colorbar(image, ax=ax, label="Pearson correlation")
ax.set_title("Summary features: pairwise correlation")
show(fig, "summary_correlation")

# COMMAND ----------

with_popularity = rows["popularity"].notna().to_numpy()
if with_popularity.sum() >= 3:
    against = summary[with_popularity].corrwith(rows.loc[with_popularity, "popularity"].astype(float),
                                                method="spearman").dropna()
    strongest = against.reindex(against.abs().sort_values(ascending=False).index).head(12)
    print("summary features most correlated with popularity (Spearman): "
          + ", ".join(f"{name} {value:+.2f}" for name, value in strongest.head(5).items()))
    display(strongest.rename("spearman_with_popularity").reset_index().rename(columns={"index": "feature"}))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.barh(range(len(strongest))[::-1], strongest.to_numpy(), color=["#c0392b" if v > 0 else "#3b6ea8"
                                                                      for v in strongest.to_numpy()])
    ax.set_yticks(range(len(strongest))[::-1], strongest.index, fontsize=7)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("Spearman correlation with popularity")
    ax.set_title("Summary features that go with popularity")
    show(fig, "summary_vs_popularity")
else:
    print("summary features vs popularity: too few tracks with a popularity")
