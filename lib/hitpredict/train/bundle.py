"""A trained model with everything scoring needs, saved as a folder and reloaded anywhere.

``bundle.json`` holds the family and input spec, the audio parameters the features were
made with, the normalisation statistics, the popular threshold, label names and the
reference distribution of predictions on the training split (for percentiles);
``weights.h5`` holds the weights. Loading rebuilds the model from the same code and
sets the weights, so no pickled Python travels with a model.
"""
from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hitpredict.embeddings import generation
from hitpredict.errors import HitpredictError
from hitpredict.models import TIME_LOCAL_TRUNKS, VECTOR_INPUTS, ModelSpec, build_model, split_model, windowed
from hitpredict.models.heads import head_width
from hitpredict.models.windows import aggregate_windows, inner_model, window_layout
from hitpredict.train.plan import Normalisation

log = logging.getLogger(__name__)

BUNDLE_FILE, WEIGHTS_FILE = "bundle.json", "weights.h5"
#: The bundle format this code writes. 2: the CRNN averages its GRU outputs over time (format 1 kept the
#: last state, so a format-1 CRNN's weights mean something else now) and spectrogram models may predict
#: from windows (``spec.window_frames``).
BUNDLE_FORMAT = 2
#: Predictions always run in batches of this size (the last one padded), so a track's
#: score does not depend on which other tracks share its batch.
PREDICT_BATCH = 32


class BundleError(HitpredictError, ValueError):
    """A model folder is missing, corrupt or does not fit the data; one line."""


@dataclass
class ModelBundle:
    """A trained Keras model with everything needed to score audio with it, anywhere.

    Attributes
    ----------
    family : the model family (:data:`hitpredict.models.FAMILIES`), which rebuilds the model.
    spec : the model's input shapes and task (:class:`~hitpredict.models.ModelSpec`).
    target : the dataset target it was trained on (:data:`hitpredict.targets.TARGETS`).
    audio : the ``audio`` config section the features were made with (sample rate, clip, mel settings).
    norm : the training split's statistics, to normalise inputs as in training.
    inputs : the model's named inputs, ``mel`` and/or ``summary``.
    dataset_id : the dataset it was trained on.
    threshold : the popularity at or above which a track counted as popular (binary targets).
    label_names : the class names, in output order (multiclass targets).
    reference : quantiles of the training split's predictions (binary, regression), for percentiles.
    metrics : the headline test-split metrics.
    embedding_model : the pretrained embedding its ``embedding`` / ``tags`` inputs came from
        (``features.embedding_model``, e.g. ``MTT_musicnn/penultimate``); None for models that read neither.
    model : the Keras 2 model (not saved in ``bundle.json``).
    """

    family: str
    spec: ModelSpec
    target: str
    audio: dict[str, Any]
    norm: Normalisation
    inputs: tuple[str, ...]
    dataset_id: str
    threshold: float | None = None
    label_names: list[str] | None = None
    reference: list[float] = field(default_factory=list)   # quantiles of training-split predictions
    metrics: dict[str, Any] = field(default_factory=dict)
    embedding_model: str | None = None
    model: Any = field(default=None, repr=False, compare=False)
    _parts: Any = field(default=None, repr=False, compare=False)   # (trunk, head) for local occlusion
    _graphs: dict = field(default_factory=dict, repr=False, compare=False)
    #: The embedder generation (:func:`hitpredict.embeddings.generation`) its model was built under.
    _generation: int = field(default_factory=generation, repr=False, compare=False)

    # ----------------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        """Every field but the model, as JSON-ready data (the content of ``bundle.json``)."""
        # not asdict(self): that would deep-copy the Keras model too
        data = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_") and f.name != "model"}
        data.update(spec=asdict(self.spec), norm=asdict(self.norm), inputs=list(self.inputs), format=BUNDLE_FORMAT)
        return data

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``weights.h5`` and ``bundle.json`` into ``directory`` (created if missing, files
        replaced); returns it as a ``Path``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_weights(str(directory / WEIGHTS_FILE))
        (directory / BUNDLE_FILE).write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "ModelBundle":
        """Load a bundle folder written by :meth:`save`, the model rebuilt from its family and spec and
        its weights set; ``BundleError`` says what is missing or broken."""
        directory = Path(directory)
        meta_path, weights_path = directory / BUNDLE_FILE, directory / WEIGHTS_FILE
        for path in (meta_path, weights_path):
            if not path.is_file():
                raise BundleError(f"not a hitpredict model folder: {path} is missing")
        try:
            data = json.loads(meta_path.read_text())
            bundle = cls(
                family=data["family"], spec=ModelSpec(**data["spec"]), target=data["target"], audio=data["audio"],
                norm=Normalisation(**data["norm"]), inputs=tuple(data["inputs"]), dataset_id=data["dataset_id"],
                threshold=data.get("threshold"), label_names=data.get("label_names"),
                reference=data.get("reference") or [], metrics=data.get("metrics") or {},
                embedding_model=data.get("embedding_model"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"corrupt model description {meta_path}: {type(exc).__name__}: {exc}") from None
        if bundle.family == "crnn" and int(data.get("format", 1)) < 2:
            raise BundleError(f"{directory}: a crnn model of bundle format {data.get('format', 1)} (it heard only the "
                              f"last seconds of a clip); this hitpredict reads format {BUNDLE_FORMAT}: retrain it")
        bundle.model = build_model(bundle.family, bundle.spec)
        try:
            bundle.model.load_weights(str(weights_path))
        except Exception as exc:  # noqa: BLE001 - h5py/Keras raise many types for a bad file
            raise BundleError(f"corrupt model weights {weights_path}: {type(exc).__name__}: {exc}") from None
        return bundle

    @property
    def outdated(self) -> bool:
        """Whether a musicnn embedder was built in this process since the model was: its graph leaves Keras
        models built before it unusable (:mod:`hitpredict.embeddings`), so load the bundle again."""
        return self._generation != generation()

    def embedder_name(self) -> str | None:
        """The pretrained embedding (``features.embedding_model``, e.g. ``MTT_musicnn/penultimate``) this model
        reads through its ``embedding`` or ``tags`` input, to embed new audio with; None when it reads
        neither. ``BundleError`` for such a model whose bundle does not name it."""
        reads = [name for name in VECTOR_INPUTS if name in self.inputs]
        if reads and not self.embedding_model:
            raise BundleError(f"a {self.family} model reads {', '.join(reads)} but its bundle does not name the "
                              "embedding model: retrain it")
        return self.embedding_model if reads else None

    # ----------------------------------------------------------------- prediction
    @property
    def mel_shape(self) -> tuple[int, int]:
        """(n_mels, frames) of the spectrograms the model was trained on."""
        return self.spec.n_mels, self.spec.frames

    def predict(self, mel: Sequence[bytes], summary: Sequence[Sequence[float] | None],
                vectors: Mapping[str, Sequence[Sequence[float] | None]] | None = None) -> np.ndarray:
        """Model outputs for stored feature columns: (n, 1) for binary/regression, (n, classes) for multiclass.

        ``mel``: n float16 log-mel dB spectrograms as stored (bytes, n_mels x frames, C order);
        ``summary``: n summary vectors (None where a track has none: zeros). Returns float32: a
        probability (0-1), a popularity, or class probabilities summing to 1.
        """
        return self.predict_occluded(mel, summary, (), vectors=vectors)[:, 0, :]

    def predict_occluded(self, mel: Sequence[bytes], summary: Sequence[Sequence[float] | None],
                         segments: Sequence[tuple[int, int]], local: bool = True,
                         vectors: Mapping[str, Sequence[Sequence[float] | None]] | None = None) -> np.ndarray:
        """Outputs for each track as stored (variant 0) and with each of ``segments`` (frame ranges)
        of its normalised spectrogram set to the training mean (variants 1..S): (n, 1 + S, width).

        Every model call takes exactly ``PREDICT_BATCH`` rows (the last call padded), so a track's
        numbers do not depend on which tracks share its batches. A windowed model
        (:mod:`hitpredict.models.windows`) runs its inner model on every window of a track and, for an
        occluded copy, only on the windows the segment touches, then aggregates each variant's windows.
        Otherwise, for families whose first layers are local in time (``TIME_LOCAL_TRUNKS``, with
        ``local``), an occluded copy recomputes those layers only around its segment and splices them
        into the stored track's; the rest of the model then runs on the spliced features. Otherwise every
        copy takes a full pass. ``vectors``: the per-clip ``embedding`` / ``tags`` of each track for
        models that read them.
        """
        from hitpredict.train.inputs import model_inputs   # loads TensorFlow

        n, variants = len(mel), 1 + len(segments)
        out = np.zeros((n, variants, head_width(self.spec)), dtype=np.float32)
        if segments and "mel" not in self.inputs:
            raise BundleError(f"a {self.family} model does not read the spectrogram: nothing to occlude")
        trunk = TIME_LOCAL_TRUNKS.get(self.family) if local else None
        by_windows = windowed(self.family, self.spec)
        zeros = [0.0] * self.spec.summary_size
        # the per-clip vectors this model reads ("embedding", "tags"), with their lengths
        sizes = {name: size for name, size in (("embedding", self.spec.embedding_size), ("tags", self.spec.tags_size))
                 if name in self.inputs}
        for first in range(0, n, PREDICT_BATCH):   # normalise PREDICT_BATCH tracks at a time
            tracks = slice(first, min(first + PREDICT_BATCH, n))
            mel_raw = np.array(list(mel[tracks]), dtype=object)
            summaries = np.array([list(s) if s is not None else zeros for s in summary[tracks]], dtype=np.float32)
            batch_vectors = {name: _vector_rows(values[tracks], sizes[name], name)
                             for name, values in (vectors or {}).items() if name in sizes}
            feed = {k: v.numpy() for k, v in model_inputs(mel_raw, summaries, self.inputs, self.spec.n_mels,
                                                          self.spec.frames, self.norm,
                                                          vectors=batch_vectors or None).items()}
            if by_windows:
                out[tracks] = self._windows_occluded(feed, segments, trunk)
            elif not segments:
                out[tracks, 0] = _in_batches(self._graph(self.model), feed)
            elif trunk is None:
                out[tracks, 0] = _in_batches(self._graph(self.model), feed)
                out[tracks, 1:] = self._occluded_full(feed, segments)
            else:
                out[tracks] = self._occluded_local(feed["mel"], segments, trunk)
        return out

    def _graph(self, model: Any) -> Any:
        """``model`` in inference mode as a TensorFlow graph function (one per model and bundle, traced
        once for any batch and window size): several times faster than eager calls for recurrent layers."""
        if id(model) not in self._graphs:
            self._graphs[id(model)] = _GraphCall(model)
        return self._graphs[id(model)]

    def _windows_occluded(self, feed: dict[str, np.ndarray], segments: Sequence[tuple[int, int]],
                          local: Any = None) -> np.ndarray:
        """(k, 1 + S, width) for a windowed model (:mod:`hitpredict.models.windows`): its inner model on every
        window of each track, then on each window an occluded segment touches (with the segment set to the
        training mean), each variant aggregated over its track's windows; windows a segment misses are reused.
        With ``local`` (the inner family's :class:`~hitpredict.models.TimeLocalTrunk`) and no other inputs,
        an occluded window recomputes only its trunk around the segment (:meth:`_windows_local`)."""
        mel = feed["mel"]
        k, frames = len(mel), mel.shape[2]
        starts, size, weights = window_layout(frames, int(self.spec.window_frames or 0), int(self.spec.window_hop or 0))
        others = {name: value for name, value in feed.items() if name != "mel"}
        index = starts[:, None] + np.arange(size)[None, :]
        windows = np.moveaxis(mel[:, :, index], 2, 1).reshape(-1, mel.shape[1], size, 1)   # (k * W, n_mels, size, 1)
        touched = [(s, w) for s, (begin, end) in enumerate(segments) for w, start in enumerate(starts)
                   if start < end and begin < start + size]
        if local is not None and not others:
            base, occluded = self._windows_local(windows, segments, touched, starts, size, local)
            base = base.reshape(k, len(starts), -1)
            occluded = occluded.reshape(len(touched), k, base.shape[-1])
        else:
            inner = self._graph(inner_model(self.model))

            def run(cut: np.ndarray, per_track: int) -> np.ndarray:   # (k * per_track, ...) -> (k, per_track, width)
                extra = {name: np.repeat(value, per_track, axis=0) for name, value in others.items()}
                return _in_batches(inner, {"mel": cut, **extra}).reshape(k, per_track, -1)

            base = run(windows, len(starts))
            occluded = np.zeros((len(touched), k, base.shape[-1]), np.float32)
            if touched:
                cut = np.stack([mel[:, :, starts[w]:starts[w] + size] for _, w in touched], axis=1)  # (k, T, ...)
                for t, (s, w) in enumerate(touched):
                    begin, end = segments[s]
                    cut[:, t, :, max(begin - starts[w], 0):max(0, min(end - starts[w], size))] = 0.0  # training mean
                occluded = np.moveaxis(run(cut.reshape(-1, mel.shape[1], size, 1), len(touched)), 1, 0)
        variants = [base]
        for s in range(len(segments)):
            copy = base.copy()
            for t, (s2, w) in enumerate(touched):
                if s2 == s:
                    copy[:, w] = occluded[t]
            variants.append(copy)
        stacked = np.stack(variants, axis=1)                                # (k, 1 + S, W, width)
        return _aggregate_each(stacked.reshape(-1, *stacked.shape[2:]), self.spec.task, weights).reshape(
            k, len(variants), -1)

    def _windows_local(self, windows: np.ndarray, segments: Sequence[tuple[int, int]],
                       touched: Sequence[tuple[int, int]], starts: np.ndarray, size: int,
                       local: Any) -> tuple[np.ndarray, np.ndarray]:
        """The inner model of a windowed model split at its time-local trunk: (outputs of the k * W stored
        windows (k * W, width), outputs of each touched (segment, window) pair's occluded window for every
        track (T * k, width), pair-major). ``windows``: (k * W, n_mels, size, 1), track-major. An occluded
        window's trunk is recomputed only on a region around its segment (:func:`window_regions`) and spliced
        into the stored window's trunk; regions of one length, from all pairs and tracks, share model calls."""
        if self._parts is None:
            self._parts = split_model(inner_model(self.model), local.layer)
        trunk, head = (self._graph(m) for m in self._parts)
        stored = _in_batches(trunk, windows)                 # (k * W, ...), time on local.axis
        base = _in_batches(head, stored)
        count = len(starts)
        k = len(windows) // count
        spliced = np.empty((len(touched), k, *stored.shape[1:]), np.float32)
        regions = window_regions(segments, touched, starts, size, local)
        for length in sorted({hi - lo for lo, hi, *_ in regions}):
            group = [t for t, (lo, hi, *_) in enumerate(regions) if hi - lo == length]
            cut = np.empty((len(group), k, windows.shape[1], length, 1), np.float32)
            for g, t in enumerate(group):
                lo, hi, begin, end, _, _ = regions[t]
                cut[g] = windows[touched[t][1]::count, :, lo:hi]
                cut[g, :, :, begin - lo:end - lo] = 0.0       # the training mean, after normalisation
            recomputed = _in_batches(trunk, cut.reshape(-1, windows.shape[1], length, 1))
            recomputed = recomputed.reshape(len(group), k, *recomputed.shape[1:])
            for g, t in enumerate(group):
                lo, _, _, _, first, last = regions[t]
                offset, last = lo // local.stride, min(last, stored.shape[local.axis])
                spliced[t] = stored[touched[t][1]::count]
                np.moveaxis(spliced[t], local.axis, 1)[:, first:last] = \
                    np.moveaxis(recomputed[g], local.axis, 1)[:, first - offset:last - offset]
        occluded = _in_batches(head, spliced.reshape(-1, *stored.shape[1:])) if len(touched) else \
            np.zeros((0, base.shape[-1]), np.float32)
        return base, occluded

    def _occluded_full(self, feed: dict[str, np.ndarray], segments: Sequence[tuple[int, int]]) -> np.ndarray:
        """(k, S, width): each occluded copy through the whole model (its other inputs, e.g. ``tags``, as
        the track's own), copies streamed in batches."""
        mel = feed["mel"]
        k, count = len(mel), len(segments)
        flat = []
        for start in range(0, k * count, PREDICT_BATCH):
            index = np.arange(start, min(start + PREDICT_BATCH, k * count))
            part = mel[index // count]   # a copy (fancy indexing)
            for row, s in enumerate(index % count):
                begin, end = segments[s]
                part[row, :, begin:end] = 0.0   # the training mean, after normalisation
            others = {name: value[index // count] for name, value in feed.items() if name != "mel"}
            flat.append(_in_batches(self._graph(self.model), {"mel": part, **others}))
        return np.concatenate(flat).reshape(k, count, -1)

    def _occluded_local(self, mel: np.ndarray, segments: Sequence[tuple[int, int]], local: Any) -> np.ndarray:
        """(k, 1 + S, width): the stored tracks, then each occluded copy from the time-local
        trunk recomputed around its segment."""
        if self._parts is None:
            self._parts = split_model(self.model, local.layer)
        trunk, head = (self._graph(m) for m in self._parts)
        frames = mel.shape[2]
        base = _in_batches(trunk, {"mel": mel})                # (k, mel', positions, channels)
        results = [_in_batches(head, base)]
        positions = base.shape[local.axis]
        for begin, end in segments:
            lo = max(0, (begin - 2 * local.radius) // local.stride * local.stride)
            hi = min(frames, end + 2 * local.radius)
            window = mel[:, :, lo:hi].copy()
            window[:, :, begin - lo:end - lo] = 0.0            # the training mean, after normalisation
            recomputed = _in_batches(trunk, {"mel": window})
            first = max(0, (begin - local.radius) // local.stride)
            last = min(positions, -(-(end + local.radius) // local.stride))
            spliced = np.moveaxis(base.copy(), local.axis, 1)   # time first after the batch, for slicing
            offset = lo // local.stride
            spliced[:, first:last] = np.moveaxis(recomputed, local.axis, 1)[:, first - offset:last - offset]
            spliced = np.moveaxis(spliced, 1, local.axis)
            results.append(_in_batches(head, spliced))
        return np.stack(results, axis=1)

    def percentile(self, values: np.ndarray) -> np.ndarray:
        """Where each value (model outputs, shape (n,)) falls in the reference distribution: percentiles
        0-100, shape (n,); nan where the bundle has no reference (multiclass)."""
        if not self.reference:
            return np.full(len(values), np.nan)
        ref = np.asarray(self.reference, dtype=float)
        return np.interp(np.asarray(values, dtype=float), ref, np.linspace(0, 100, len(ref)))


class _GraphCall:
    """A Keras model as one ``tf.function`` whose signature leaves every dimension but the last
    open, traced on its first call."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.function: Any = None

    def __call__(self, inputs: Any) -> Any:
        if self.function is None:
            import tensorflow as tf

            signature = tf.nest.map_structure(
                lambda a: tf.TensorSpec([None] * (a.ndim - 1) + [a.shape[-1]], tf.float32), inputs)
            self.function = tf.function(lambda x: self.model(x, training=False), input_signature=[signature],
                                        autograph=False)
        return self.function(inputs)


def _vector_rows(values: Sequence[Sequence[float] | None], size: int, name: str) -> np.ndarray:
    """One ``name`` vector per track as float32 (n, ``size``). ``BundleError`` for a track without one
    (no made-up vector: the scoring job refuses such tracks before it starts) or of another length."""
    out = np.zeros((len(values), size), np.float32)
    for i, row in enumerate(values):
        if row is None:
            raise BundleError(f"a track without {name}: a model that reads {name} cannot score it (extract its features "
                              f"with embeddings on)")
        if len(row) != size:
            raise BundleError(f"a {name} of {len(row)} values; the model reads {size} (features extracted with "
                              f"another embedding model or layer)")
        out[i] = row
    return out


#: Region lengths of :func:`window_regions` are rounded up to a multiple of this many frames (at least the
#: trunk's stride), so that the regions of all pairs fall into a few lengths that share full model calls.
REGION_QUANTUM = 32


def window_regions(segments: Sequence[tuple[int, int]], touched: Sequence[tuple[int, int]], starts: np.ndarray,
                   size: int, local: Any) -> list[tuple[int, int, int, int, int, int]]:
    """For each (segment, window) pair of ``touched`` (indexes into ``segments`` and ``starts``, windows of
    ``size`` frames): (lo, hi, begin, end, first, last), frames and trunk positions inside the window. The
    segment covers frames [begin, end) of the window; the trunk (``local``, a
    :class:`~hitpredict.models.TimeLocalTrunk`) is recomputed on frames [lo, hi) (lo a multiple of its stride,
    at least ``2 * radius`` frames of context each side where the window has them, the length rounded up to
    :data:`REGION_QUANTUM`), and its positions [first, last) replace the stored window's; every other
    position does not see the segment."""
    quantum = -(-max(REGION_QUANTUM, local.stride) // local.stride) * local.stride
    out = []
    for s, w in touched:
        begin, end = max(segments[s][0] - int(starts[w]), 0), min(segments[s][1] - int(starts[w]), size)
        lo = max(0, (begin - 2 * local.radius) // local.stride * local.stride)
        hi = min(size, end + 2 * local.radius)
        length = min(size, -(-(hi - lo) // quantum) * quantum)
        hi = min(size, lo + length)                      # grow to the rounded length, to the right first
        lo = (hi - length) // local.stride * local.stride
        first = max(0, (begin - local.radius) // local.stride)
        last = min(-(-size // local.stride), -(-(end + local.radius) // local.stride))
        out.append((lo, hi, begin, end, first, last))
    return out


@functools.lru_cache(maxsize=None)
def _aggregator(task: str) -> Any:
    """A graph function: (n, W, width) window outputs, (W,) weights -> (n, width), :func:`aggregate_windows` on
    each clip alone (``tf.map_fn``), so the same windows always give the same bits."""
    import tensorflow as tf

    spec = [tf.TensorSpec([None, None, None], tf.float32), tf.TensorSpec([None], tf.float32)]
    return tf.function(lambda outputs, weights: tf.map_fn(
        lambda one: aggregate_windows(one[None], task, weights)[0], outputs), input_signature=spec, autograph=False)


def _aggregate_each(outputs: np.ndarray, task: str, weights: np.ndarray) -> np.ndarray:
    """:func:`~hitpredict.models.windows.aggregate_windows` of each clip's windows (n, W, width) -> (n, width),
    one clip at a time: TensorFlow's vectorised log and sigmoid round an element by where it falls in a tensor,
    so aggregating a batch would make a clip's numbers depend on the clips beside it (by ~1e-8)."""
    return _aggregator(task)(outputs.astype(np.float32), np.asarray(weights, np.float32)).numpy()


def _in_batches(model: Any, inputs: Any) -> np.ndarray:
    """``model`` (a callable in inference mode) over the rows of ``inputs`` (an array, or a dict of
    arrays) in calls of exactly ``PREDICT_BATCH`` rows, the last padded with zeros."""
    named = inputs if isinstance(inputs, dict) else None
    arrays = list(named.values()) if named else [inputs]
    n = len(arrays[0])
    out = []
    for start in range(0, n, PREDICT_BATCH):
        stop = min(start + PREDICT_BATCH, n)
        padded = [np.concatenate([a[start:stop], np.zeros((PREDICT_BATCH - (stop - start), *a.shape[1:]), a.dtype)])
                  for a in arrays]
        feed = dict(zip(named, padded)) if named else padded[0]
        out.append(model(feed).numpy()[: stop - start])
    return np.concatenate(out)


def reference_quantiles(values: np.ndarray, points: int) -> list[float]:
    """``points`` evenly spaced quantiles of ``values`` (the training split's predictions)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return []
    return np.quantile(values, np.linspace(0, 1, points)).tolist()
