# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · The catalogue
# MAGIC What the lake holds before any model: how popularity is distributed (and where each number
# MAGIC came from), how many tracks each artist has, and which tracks have a preview, by catalogue
# MAGIC source, with the fetch outcomes.
# MAGIC
# MAGIC Runs on Databricks (import this file: the `COMMAND` lines split it into cells; the `conf`
# MAGIC widget names the config, `databricks` by default) and locally as plain Python:
# MAGIC `HITPREDICT_CONF=conf/local.yaml .venv/bin/python notebooks/01_catalogue.py` (figures go to
# MAGIC `data/notebooks/01_catalogue/`).

# COMMAND ----------

NOTEBOOK = "01_catalogue"

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

from pyspark.sql import functions as F

from hitpredict.lake import open_lake
from hitpredict.spark import get_spark

spark = get_spark(config.spark)  # on Databricks, the notebook's session
lake = open_lake(config.lake, spark)
tables = lake.tables()
print(f"{len(tables)} tables")
display(spark.createDataFrame([(t.name, t.version, t.files, t.rows) for t in tables],
                              "table string, version long, files long, rows long"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Popularity
# MAGIC The label of the `popular` and `popularity` targets. Numbers from different signals
# MAGIC (`popularity_source`: a label's own, Spotify's, Deezer's rank / 10,000) are on different scales:
# MAGIC `dataset.popularity_sources` keeps one.

# COMMAND ----------

catalogue = lake.read("catalogue")
counts = catalogue.agg(F.count("*").alias("tracks"), F.countDistinct("primary_artist").alias("artists"),
                       F.countDistinct("source").alias("sources"),
                       F.count("popularity").alias("with_popularity")).first()
print(f"catalogue: {counts.tracks} tracks by {counts.artists} artists from {counts.sources} source(s); "
      f"{counts.with_popularity} with a popularity")
by_source = catalogue.groupBy(F.coalesce("popularity_source", F.lit("(none)")).alias("popularity_source")).agg(
    F.count("*").alias("tracks"), F.round(F.avg("popularity"), 1).alias("mean"),
    F.expr("percentile_approx(popularity, 0.5)").alias("median")).orderBy(F.desc("tracks"))
display(by_source)

# COMMAND ----------

popularity = catalogue.select("popularity", "popularity_source", "region").where(F.col("popularity").isNotNull())
popularity = popularity.toPandas()  # one number per track: fine for millions of rows
threshold = config.dataset.popular_threshold
if len(popularity):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    signal = popularity["popularity_source"].fillna("?")
    groups = [(name, part["popularity"]) for name, part in popularity.groupby(signal)]
    left.hist([values for _, values in groups], bins=30, stacked=True, label=[name for name, _ in groups])
    if threshold is not None:
        left.axvline(threshold, color="#c0392b", linestyle="--", label=f"popular threshold {threshold:g}")
    left.set_xlabel("popularity (0-100)")
    left.set_ylabel("tracks")
    left.set_title("Popularity by signal")
    left.legend(fontsize=8)
    regions = sorted(popularity["region"].dropna().unique())
    if regions:
        right.boxplot([popularity.loc[popularity["region"] == r, "popularity"] for r in regions])
        right.set_xticks(range(1, len(regions) + 1), regions, rotation=20, fontsize=8, **PLAIN_TEXT)
    right.set_ylabel("popularity")
    right.set_title("Popularity by region")
    show(fig, "popularity")
else:  # e.g. a Spotify crawl by a Development-Mode app, with no Deezer rank found
    print("no track has a popularity: the popular and popularity targets cannot be trained on this catalogue")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Tracks per artist
# MAGIC Splits are grouped by primary artist, so an artist with many tracks weighs on one split only.

# COMMAND ----------

per_artist = (catalogue.groupBy(F.coalesce("primary_artist", F.lit("(unknown)")).alias("artist"))
              .agg(F.count("*").alias("tracks"), F.round(F.avg("popularity"), 1).alias("mean_popularity"))
              .orderBy(F.desc("tracks"), "artist").toPandas())
print(f"tracks per artist: median {per_artist['tracks'].median():g}, max {per_artist['tracks'].max()} "
      f"({per_artist['artist'].iloc[0]})")
display(per_artist.head(20))
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
most = int(per_artist["tracks"].max())
left.hist(per_artist["tracks"], bins=[b - 0.5 for b in range(1, most + 2)] if most <= 60 else 60, color="#3b6ea8",
          edgecolor="white")
left.set_xlabel("tracks of one artist")
left.set_ylabel("artists")
left.set_title(f"{len(per_artist)} artists")
top = per_artist.head(20)[::-1]
right.barh(range(len(top)), top["tracks"], color="#3b6ea8")
right.set_yticks(range(len(top)), top["artist"], fontsize=7, **PLAIN_TEXT)  # names are text, never mathtext
right.set_xlabel("tracks")
right.set_title("Artists with the most tracks")
show(fig, "tracks_per_artist")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Preview coverage by source
# MAGIC Per catalogue source: tracks with a preview URL or an audio file, and what `fetch_previews` made of
# MAGIC them: `ok`, `failed` (permanent, with its `error_kind`), `retrying` (transient failures that the next
# MAGIC run tries again, `fetch_attempts`) or `not fetched` yet.

# COMMAND ----------

previews = lake.read("previews").select("track_id", "status", "error_kind", "url") if lake.exists("previews") else None
attempts = (lake.read("fetch_attempts").groupBy("track_id").agg(F.max("run").alias("last_run"))
            if lake.exists("fetch_attempts") else None)
tracks = catalogue.select("track_id", "source", (F.col("preview_url").isNotNull()).alias("has_url"),
                          (F.col("audio_uri").isNotNull()).alias("has_file"))
if previews is not None:
    tracks = tracks.join(previews, "track_id", "left")
else:
    tracks = (tracks.withColumn("status", F.lit(None).cast("string"))
              .withColumn("error_kind", F.lit(None).cast("string")).withColumn("url", F.lit(None).cast("string")))
if attempts is not None:
    tracks = tracks.join(attempts, "track_id", "left")
else:
    tracks = tracks.withColumn("last_run", F.lit(None).cast("int"))
outcome = (F.when(F.col("status").isNotNull(), F.col("status"))
           .when(F.col("last_run").isNotNull(), F.lit("retrying")).otherwise(F.lit("not fetched")))
tracks = tracks.withColumn("outcome", outcome)
coverage = (tracks.groupBy("source").agg(
    F.count("*").alias("tracks"), F.sum(F.col("has_url").cast("int")).alias("preview_url"),
    F.sum(F.col("has_file").cast("int")).alias("audio_file"),
    *(F.sum((F.col("outcome") == o).cast("int")).alias(o.replace(" ", "_"))
      for o in ("ok", "failed", "retrying", "not fetched")))
    .orderBy(F.desc("tracks")).toPandas())
coverage["coverage"] = (coverage["ok"] / coverage["tracks"]).round(3)
print(f"previews: {int(coverage['ok'].sum())} ok of {int(coverage['tracks'].sum())} tracks "
      f"({coverage['ok'].sum() / max(coverage['tracks'].sum(), 1):.1%})")
display(coverage)
failures = (tracks.where(F.col("outcome") == "failed").groupBy("source", "error_kind").count()
            .orderBy(F.desc("count")).toPandas())
print(f"failed fetches by kind: {dict(zip(failures['error_kind'], failures['count']))}")
if len(failures):
    display(failures)

# COMMAND ----------

fig, ax = plt.subplots(figsize=(8, 0.6 * len(coverage) + 1.6))
left_edge = [0] * len(coverage)
colours = {"ok": "#2e8b57", "failed": "#c0392b", "retrying": "#e6a23c", "not_fetched": "#9aa5b1"}
for column, colour in colours.items():
    ax.barh(range(len(coverage)), coverage[column], left=left_edge, color=colour, label=column.replace("_", " "))
    left_edge = [a + b for a, b in zip(left_edge, coverage[column])]
ax.set_yticks(range(len(coverage)), coverage["source"], fontsize=8, **PLAIN_TEXT)
ax.set_xlabel("tracks")
ax.set_title("Preview fetch outcome by catalogue source")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
show(fig, "preview_coverage")

# COMMAND ----------

hosts = (tracks.where(F.col("outcome") == "ok")
         .groupBy(F.coalesce(F.regexp_extract("url", r"^[a-z][a-z0-9+.-]*://([^/:?#]+)", 1), F.lit("")).alias("host"))
         .count().orderBy(F.desc("count")).toPandas())
hosts["host"] = hosts["host"].replace("", "(local or fsspec file)")
print(f"previews fetched from {len(hosts)} host(s)")
display(hosts)
if lake.exists("rejects"):
    kind = F.regexp_replace(F.trim(F.regexp_extract("reason", r"^(?:row \d+: )?([^:('\"]*)", 1)), r"\d+(\.\d+)?", "#")
    rejects = lake.read("rejects").groupBy(kind.alias("reason")).count().orderBy(F.desc("count"))
    print(f"rejects at ingest: {rejects.agg(F.sum('count')).first()[0] or 0}")
    display(rejects)
else:
    print("rejects at ingest: 0")
