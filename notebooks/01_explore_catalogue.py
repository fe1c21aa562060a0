# Databricks notebook source
# MAGIC %md
# MAGIC # Explore the catalogue
# MAGIC Runs locally (`.venv/bin/python notebooks/01_explore_catalogue.py`, or open it in
# MAGIC Jupyter with jupytext) and on Databricks (import as a notebook: the
# MAGIC `# COMMAND ----------` lines split it into cells). It reads the lake with the same
# MAGIC config the jobs use and plots what the catalogue holds.

# COMMAND ----------

import os

from hitpredict.keras_compat import ensure_keras2

ensure_keras2()  # Keras 2 for every model this notebook loads, before anything imports TensorFlow

from hitpredict.config import load_config
from hitpredict.lake import open_lake
from hitpredict.spark import get_spark

CONF = os.environ.get("HITPREDICT_CONF", "conf/local.yaml")
config = load_config(CONF)
spark = get_spark(config.spark)
lake = open_lake(config.lake, spark)
for info in lake.tables():
    print(info)

# COMMAND ----------

catalogue = lake.read("catalogue").toPandas()
print(catalogue[["track_id", "title", "primary_artist", "popularity", "region"]].head(10))

# COMMAND ----------

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
catalogue["popularity"].plot.hist(bins=30, ax=left, title="popularity")
catalogue.boxplot(column="popularity", by="region", ax=right)
right.set_title("popularity by region")
fig.suptitle("")
os.makedirs("data/plots", exist_ok=True)
fig.savefig("data/plots/catalogue.png", dpi=100, bbox_inches="tight")
print("wrote data/plots/catalogue.png")
