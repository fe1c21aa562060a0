"""Which head the ``embed`` family should put on the embedding (``train.embed_units``, ``embed_dropout``,
``embed_input_dropout``, ``embed_l2``): grouped cross-validation on the real-audio benchmark's training and
validation clips.

Reads the lake of a finished ``bench/real_audio.py`` run (``--work``, default ``data/bench-real-audio``; the
embedding must be on, as it is by default): its ``region`` dataset's training and validation clips, each clip's
stored ``embedding`` and ``summary``. The test clips are left out, so the choice never sees the clips
``bench/real_audio.py`` reports on. Each candidate head is hitpredict's own ``embed`` model
(``models.build_model("embed", ...)``), trained as ``train_model`` trains it with one process: the run's
``train`` settings (Adam at ``learning_rate``, ``batch_size``, at most ``epochs``, early stopping on the
validation loss with ``patience``, best weights kept), inputs standardised by the training rows' statistics.
Each is scored by macro-F1 over ``--repeats`` x 5 folds of ``StratifiedGroupKFold`` (groups: the source track,
so no recording is in two folds); inside each fold's training part, one grouped fifth is the early-stopping
validation. The MFCC baseline of ``bench/real_audio.py`` (20 MFCC means and deviations, standardised logistic
regression, the best C of (0.01, 0.1, 1)) and the same logistic regression on the embedding and summary vector
are scored on the same folds.

    .venv/bin/python bench/embed_head_choice.py [--work data/bench-real-audio] [--repeats 2]

Prints one line per candidate (mean macro-F1 and its standard error over the folds), best first. Last line:
``ratio: <best embed head's macro-F1 over the MFCC baseline's>``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

from hitpredict.keras_compat import ensure_keras2  # noqa: E402

ensure_keras2()

import numpy as np  # noqa: E402

from embedding_choice import grouped_cv, training_clips  # noqa: E402  (bench/ is this script's folder)
from real_audio import mfcc_features  # noqa: E402

#: name -> the ``train`` settings of one candidate (the first is the shipped default): the head's
#: (``embed_units``, ``embed_dropout``, ``embed_input_dropout``, ``embed_l2``) and the run's (``learning_rate``,
#: ``patience``), the others as the benchmark run's config has them.
CANDIDATES: dict[str, dict[str, Any]] = {
    "mlp 128-64, dropout 0.3": {"embed_units": (128, 64), "embed_dropout": 0.3},
    "mlp 128-64, dropout 0.5, input 0.2": {"embed_units": (128, 64), "embed_dropout": 0.5,
                                           "embed_input_dropout": 0.2},
    "mlp 64, dropout 0.5": {"embed_units": (64,), "embed_dropout": 0.5},
    "mlp 64, dropout 0.5, l2 1e-3": {"embed_units": (64,), "embed_dropout": 0.5, "embed_l2": 1e-3},
    "mlp 64, dropout 0.5, patience 10": {"embed_units": (64,), "embed_dropout": 0.5, "patience": 10},
    "mlp 64, dropout 0.5, lr 3e-3, patience 10": {"embed_units": (64,), "embed_dropout": 0.5,
                                                  "learning_rate": 3e-3, "patience": 10},
    "linear": {"embed_units": ()},
    "linear, input 0.5": {"embed_units": (), "embed_input_dropout": 0.5},
    "linear, l2 1e-3": {"embed_units": (), "embed_l2": 1e-3},
    "linear, l2 1e-2": {"embed_units": (), "embed_l2": 1e-2},
    "linear, patience 10": {"embed_units": (), "patience": 10},
    "linear, lr 1e-2, patience 10": {"embed_units": (), "learning_rate": 1e-2, "patience": 10},
}
#: The candidates' keys that are the run's settings, not the model's.
RUN_SETTINGS = ("learning_rate", "patience")


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``train`` and ``others`` less ``train``'s column means, over its deviations (at least 1e-3, as training's
    normalisation floors them)."""
    from hitpredict.train.inputs import _MIN_STD

    mean, std = train.mean(axis=0), np.maximum(train.std(axis=0), _MIN_STD)
    return [((x - mean) / std).astype(np.float32) for x in (train, *others)]


def fit_embed(head: dict[str, Any], train_cfg: Any, n_classes: int, seed: int,
              fit_rows: tuple[np.ndarray, np.ndarray, np.ndarray],
              stop_rows: tuple[np.ndarray, np.ndarray, np.ndarray],
              test_rows: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Train one ``embed`` model with ``head``'s settings (the run's own where it names none) on ``fit_rows`` (embedding, summary, label), early
    stopping on ``stop_rows``; the predicted classes of ``test_rows`` (embedding, summary): (test rows,)."""
    import tensorflow as tf

    from hitpredict.keras_compat import keras
    from hitpredict.models import ModelSpec, build_model
    from hitpredict.models.heads import loss_and_metrics

    k = keras()
    tf.random.set_seed(seed)
    run = {name: head.get(name, getattr(train_cfg, name)) for name in RUN_SETTINGS}
    spec = ModelSpec("multiclass", summary_size=fit_rows[1].shape[1], n_classes=n_classes, seed=seed,
                     embedding_size=fit_rows[0].shape[1],
                     **{name: value for name, value in head.items() if name not in RUN_SETTINGS})
    model = build_model("embed", spec)
    loss, metrics = loss_and_metrics(spec)
    model.compile(optimizer=k.optimizers.Adam(learning_rate=run["learning_rate"]), loss=loss, metrics=metrics)
    model.fit({"embedding": fit_rows[0], "summary": fit_rows[1]}, fit_rows[2], batch_size=train_cfg.batch_size,
              epochs=train_cfg.epochs, shuffle=True, verbose=0,
              validation_data=({"embedding": stop_rows[0], "summary": stop_rows[1]}, stop_rows[2]),
              callbacks=[k.callbacks.EarlyStopping(monitor="val_loss", patience=run["patience"],
                                                   restore_best_weights=True)])
    probs = model.predict({"embedding": test_rows[0], "summary": test_rows[1]}, verbose=0, batch_size=256)
    k.backend.clear_session()
    return np.asarray(probs).argmax(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="data/bench-real-audio", help="a finished bench/real_audio.py run")
    parser.add_argument("--repeats", type=int, default=2, help="shuffled repeats of the 5 grouped folds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedGroupKFold

    from hitpredict.logs import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)   # retracing warnings: every fold builds fresh models
    config, dataset, table = training_clips(Path(args.work), ["summary", "embedding", "embedding_model"])
    if table["embedding"].isna().any() or not len(table["embedding"].iloc[0]):
        raise SystemExit(f"{args.work}: clips without an embedding; rerun bench/real_audio.py with the embedding on")
    y = table["label"].to_numpy(dtype=int)
    groups = table["group"].to_numpy()
    embedding = np.stack(table["embedding"].to_numpy()).astype(np.float64)
    summary = np.stack(table["summary"].to_numpy()).astype(np.float64)
    folds = [fold for seed in range(args.repeats)
             for fold in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(y, y, groups)]
    n_classes = int(y.max()) + 1
    print(f"dataset {dataset}: {len(table)} training and validation clips (test clips left out), {n_classes} "
          f"classes, {len(folds)} grouped folds; embedding {table['embedding_model'].iloc[0]} "
          f"({embedding.shape[1]} values) + summary ({summary.shape[1]})", flush=True)

    tf.config.experimental.enable_op_determinism()
    scores: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    started = time.process_time()
    for i, (train, test) in enumerate(folds):
        fit_part, stop_part = next(StratifiedGroupKFold(5, shuffle=True, random_state=100 + i)
                                   .split(train, y[train], groups[train]))
        fit, stop = train[fit_part], train[stop_part]
        e_fit, e_stop, e_test = standardise(embedding[fit], embedding[stop], embedding[test])
        s_fit, s_stop, s_test = standardise(summary[fit], summary[stop], summary[test])
        for name, head in CANDIDATES.items():
            predicted = fit_embed(head, config.train, n_classes, config.train.seed + i, (e_fit, s_fit, y[fit]),
                                  (e_stop, s_stop, y[stop]), (e_test, s_test))
            scores[name].append(float(f1_score(y[test], predicted, average="macro")))
        print(f"  fold {i + 1}/{len(folds)}: {time.process_time() - started:.0f} CPU-s so far", flush=True)

    results = {name: (float(np.mean(v)), float(np.std(v) / np.sqrt(len(v)))) for name, v in scores.items()}
    paths = list(table["audio_uri"].str.replace("file://", "", regex=False))
    references = {"logreg on embedding + summary": grouped_cv(np.hstack([embedding, summary]), y, folds),
                  "mfcc-baseline (logreg)": grouped_cv(mfcc_features(paths, config.audio.sample_rate), y, folds)}
    print(f"\n{'embed head':<40}{'macro-F1':>9}{'s.e.':>7}")
    for name, (mean, error) in sorted(results.items(), key=lambda item: -item[1][0]):
        print(f"{name:<40}{mean:>9.3f}{error:>7.3f}")
    for name, (mean, error, c) in references.items():
        print(f"{name:<40}{mean:>9.3f}{error:>7.3f}  (C {c:g})")
    best = max(results, key=lambda n: results[n][0])
    baseline = references["mfcc-baseline (logreg)"][0]
    print(f"best: {best} ({CANDIDATES[best]}); MFCC baseline {baseline:.3f}")
    print(f"ratio: {results[best][0] / baseline:.2f}")


if __name__ == "__main__":
    main()
