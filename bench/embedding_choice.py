"""Which musicnn model and layer ``embedding.model`` / ``embedding.layer`` should use: grouped cross-validation
on the real-audio benchmark's training and validation clips.

Reads the lake of a finished ``bench/real_audio.py`` run (``--work``, default ``data/bench-real-audio``): its
``region`` dataset's split and every clip's summary vector. The test clips are left out, so the choice never sees
the clips ``bench/real_audio.py`` reports on. For each model the wheel ships (``config.EMBEDDING_LAYERS``) one
graph gives every layer of all ten 3 s patches of each clip, from the features stage's own decode and
``embeddings.musicnn_input`` (a check asserts that the chosen layer equals ``embeddings.Embedder``'s output for one
clip to 1e-4). Each candidate is the clip's mean over its patches (all 10, and the 3 the shipped
``embedding.max_patches`` keeps) beside the summary vector, standardised, fed to scikit-learn's logistic
regression; so is the MFCC baseline of ``bench/real_audio.py`` (20 MFCC means and deviations). Each is scored by
macro-F1 over ``--repeats`` x 5 folds of ``StratifiedGroupKFold`` (groups: the source track, so no recording is in
two folds), the regularisation C being the best of (0.01, 0.1, 1) for each candidate.

    .venv/bin/python bench/embedding_choice.py [--work data/bench-real-audio] [--repeats 4]

Prints one line per candidate (mean macro-F1 and its standard error over the folds), best first. Last line:
``ratio: <best candidate's macro-F1 over the MFCC baseline's>``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from hitpredict.keras_compat import ensure_keras2  # noqa: E402

ensure_keras2()

import numpy as np  # noqa: E402

from real_audio import mfcc_features  # noqa: E402  (bench/ is this script's folder)
from hitpredict import embeddings  # noqa: E402
from hitpredict.audio import decode_clip  # noqa: E402
from hitpredict.config import EMBEDDING_LAYERS, load_config  # noqa: E402

C_GRID = (0.01, 0.1, 1.0)
#: Patches of a 30 s clip (ten non-overlapping 3 s patches) and the three ``max_patches: 3`` keeps.
ALL_PATCHES, SHIPPED_PATCHES = 10, 3


def clip_inputs(paths: list[str], sample_rate: int) -> np.ndarray:
    """musicnn's log-mel patches of each clip, as the features stage computes them: (clips, 10, 187, 96)."""
    out = []
    for path in paths:
        clip = decode_clip(Path(path).read_bytes(), sample_rate, 30.0)
        heard = clip.samples[:round(min(clip.duration_s, 30.0) * clip.sample_rate)]
        spectrogram = embeddings.log_compress(embeddings.musicnn_input(heard, clip.sample_rate))
        out.append(embeddings.patches(spectrogram)[:ALL_PATCHES])
    return np.stack(out)


def layer_outputs(model: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every layer of ``EMBEDDING_LAYERS[model]`` for every patch: name -> (clips, patches, width)."""
    import tensorflow as tf
    import musicnn.models as musicnn_models

    graph = tf.Graph()
    with graph.as_default(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tf.name_scope("model"):
            x = tf.compat.v1.placeholder(tf.float32, [None, embeddings.PATCH_FRAMES, embeddings.N_MELS])
            layers = musicnn_models.define_model(x, False, model, embeddings.N_TAGS)
            outputs = {"tags": tf.nn.sigmoid(layers[0])}
            if "vgg" in model:
                outputs["pool5"] = tf.compat.v1.layers.flatten(layers[5])
            else:
                outputs.update(zip(("mean_pool", "max_pool", "penultimate"), layers[6:9]))
        session = tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(device_count={"GPU": 0}))
        tf.compat.v1.train.Saver().restore(session, str(embeddings._weights_dir(model)) + "/")
    clips, patches = inputs.shape[:2]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, clips, 8):
        batch = inputs[start:start + 8]
        result = session.run(outputs, {x: batch.reshape(-1, *inputs.shape[2:])})
        for name, value in result.items():
            parts[name].append(value.reshape(len(batch), patches, -1))
    session.close()
    return {name: np.concatenate(value) for name, value in parts.items()}


def check_against_embedder(model: str, outputs: dict[str, np.ndarray], spectrogram: np.ndarray) -> None:
    """The first clip's ``penultimate`` (or ``pool5``) and tags equal :class:`embeddings.Embedder`'s to 1e-4."""
    layer = EMBEDDING_LAYERS[model][0]
    got = embeddings.Embedder(model, layer).embed([spectrogram])[0]
    for name, want in ((layer, got.embedding), ("tags", got.tags)):
        diff = float(np.max(np.abs(outputs[name][0].mean(axis=0) - want)))
        if diff > 1e-4:
            raise SystemExit(f"{model}/{name}: this script's graph differs from Embedder's by {diff:.2g}")


def grouped_cv(x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
    """(mean macro-F1, its standard error, C) of standardised logistic regression, the best C of ``C_GRID``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best: tuple[float, float, float] | None = None
    for c in C_GRID:
        scores = []
        for train, test in folds:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
            scores.append(f1_score(y[test], model.fit(x[train], y[train]).predict(x[test]), average="macro"))
        mean, error = float(np.mean(scores)), float(np.std(scores) / np.sqrt(len(scores)))
        if best is None or mean > best[0]:
            best = (mean, error, c)
    assert best is not None
    return best


def training_clips(work: Path, columns: list[str]) -> tuple[Any, str, Any]:
    """(config, dataset_id, table) of a finished ``bench/real_audio.py`` run in ``work``: its latest ``region``
    dataset's training and validation clips (the test clips left out), one row each, sorted by ``track_id``,
    with ``label``, ``split``, ``audio_uri``, ``group`` (the source track, 0-based, for grouped folds) and the
    ``features`` columns named in ``columns``."""
    import pandas as pd
    import pyarrow.compute as pc

    from hitpredict.lake import open_lake

    work = work.resolve()
    if not (work / "real_audio.yaml").is_file():
        raise SystemExit(f"{work} holds no bench/real_audio.py run (no real_audio.yaml): run that first")
    config = load_config(work / "real_audio.yaml", [], environ={})
    lake = open_lake(config.lake, None)
    examples = lake.read_columns("examples", ["dataset_id", "track_id", "split", "label"]).to_pandas()
    datasets = lake.read_columns("datasets", ["dataset_id", "target", "created_at"]).to_pandas()
    dataset = datasets[datasets["target"] == "region"].sort_values("created_at")["dataset_id"].iloc[-1]
    rows = examples[(examples["dataset_id"] == dataset) & (examples["split"] != "test")]
    features = lake.read_columns("features", ["track_id", *columns])
    features = features.filter(pc.is_in(features["track_id"], pa_array(rows["track_id"])))
    catalogue = lake.read_columns("catalogue", ["track_id", "audio_uri", "artists"]).to_pandas()
    table = (rows.merge(features.to_pandas(), on="track_id").merge(catalogue, on="track_id")
             .sort_values("track_id").reset_index(drop=True))
    table["group"] = pd.factorize(table["artists"].astype(str))[0]
    return config, str(dataset), table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="data/bench-real-audio", help="a finished bench/real_audio.py run")
    parser.add_argument("--repeats", type=int, default=4, help="shuffled repeats of the 5 grouped folds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from sklearn.model_selection import StratifiedGroupKFold

    config, dataset, table = training_clips(Path(args.work), ["summary"])
    y = table["label"].to_numpy(dtype=int)
    groups = table["group"].to_numpy()
    folds = [fold for seed in range(args.repeats)
             for fold in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(y, y, groups)]
    summary = np.stack(table["summary"].to_numpy()).astype(np.float64)
    print(f"dataset {dataset}: {len(table)} training and validation clips (test clips left out), "
          f"{len(set(y))} classes, {len(folds)} grouped folds", flush=True)

    started = time.process_time()
    inputs = clip_inputs(list(table["audio_uri"].str.replace("file://", "", regex=False)), config.audio.sample_rate)
    candidates: dict[str, np.ndarray] = {
        "mfcc-baseline": mfcc_features(list(table["audio_uri"].str.replace("file://", "", regex=False)),
                                       config.audio.sample_rate),
        "summary": summary}
    shipped = np.linspace(0, ALL_PATCHES - 1, SHIPPED_PATCHES).round().astype(int)
    for model, layers in EMBEDDING_LAYERS.items():
        outputs = layer_outputs(model, inputs)
        check_against_embedder(model, outputs, embeddings.musicnn_input(
            decode_clip(Path(table["audio_uri"][0].replace("file://", "")).read_bytes(), config.audio.sample_rate,
                        30.0).samples, config.audio.sample_rate))
        for layer in layers:
            per_patch = outputs[layer]
            candidates[f"{model}/{layer}"] = np.hstack([per_patch.mean(axis=1), summary])
            candidates[f"{model}/{layer}/patches=3"] = np.hstack([per_patch[:, shipped].mean(axis=1), summary])
        print(f"  {model}: {time.process_time() - started:.0f} CPU-s so far", flush=True)

    results = {name: grouped_cv(x, y, folds) for name, x in candidates.items()}
    print(f"\n{'candidate (+ summary vector)':<36}{'macro-F1':>9}{'s.e.':>7}{'C':>6}")
    for name, (mean, error, c) in sorted(results.items(), key=lambda item: -item[1][0]):
        print(f"{name:<36}{mean:>9.3f}{error:>7.3f}{c:>6g}")
    best = max((n for n in results if n not in ("mfcc-baseline", "summary")), key=lambda n: results[n][0])
    print(f"best: {best}; MFCC baseline {results['mfcc-baseline'][0]:.3f}")
    print(f"ratio: {results[best][0] / results['mfcc-baseline'][0]:.2f}")


def pa_array(values: Any) -> Any:
    import pyarrow as pa

    return pa.array(list(values), pa.string())


if __name__ == "__main__":
    main()
