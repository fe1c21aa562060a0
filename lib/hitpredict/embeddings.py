"""Pretrained music embeddings (musicnn): the model's audio front end and a runner, no Spark.

musicnn's wheel carries four trained models (``MTT_musicnn``, ``MTT_vgg``, ``MSD_musicnn``,
``MSD_vgg``; ISC licence), so nothing is downloaded. Its own ``musicnn.extractor`` must never be
imported here: importing it calls ``tf.compat.v1.disable_eager_execution()`` for the whole process,
which would break Keras training and scoring in a reused Spark worker. Instead, :class:`Embedder`
builds the network with ``musicnn.models.define_model`` inside a ``tf.Graph`` of its own and
restores the checkpoint into a ``tf.compat.v1.Session`` bound to that graph; the process stays eager.

The front end (:func:`musicnn_input`) takes the window the features stage has already decoded
(22,050 Hz by default), resamples it to 16 kHz with soxr and computes musicnn's mel spectrogram
(n_fft 512, hop 256, 96 Slaney mel bands, power) with the float32 STFT of :mod:`hitpredict.features`,
then rounds it to float16 as musicnn's ``batch_data`` does. :func:`log_compress` and :func:`patches`
then give the network's input: ``log10(10000 * mel + 1)`` cut into non-overlapping 3 s patches
(187 frames), exactly the stock extractor's batching. A clip's embedding is the mean over its
patches of the chosen layer; its tags, the mean of the 50 tag probabilities.

Building the network's tf.compat.v1 graph leaves the Keras models built earlier in the process unusable
(TensorFlow raises "Your Layer or Model is in an invalid state" for one not called before the build, or
asked for a new sub-model after it). Every build bumps :func:`generation`, so a process that keeps Keras
models across tasks (``score_catalogue``'s per-worker bundles) can tell when to load them again.
"""
from __future__ import annotations

import importlib.util
import logging
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hitpredict.audio_params import AudioParams
from hitpredict.config import EMBEDDING_LAYERS, EmbeddingConfig, embedding_name, parse_embedding_name
from hitpredict.features import _filters, power_spectrogram
from hitpredict.keras_compat import ensure_keras2

log = logging.getLogger(__name__)

#: The models musicnn's wheel ships, and the layers each can give (``tags``: the 50 tag probabilities).
MODEL_LAYERS = EMBEDDING_LAYERS
#: Width of each layer's vector.
LAYER_SIZES = {"penultimate": 200, "max_pool": 753, "mean_pool": 753, "pool5": 256, "tags": 50}
N_TAGS = 50
#: musicnn's front end (``musicnn.configuration``): 16 kHz, n_fft 512, hop 256, 96 mel bands.
SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
#: Frames of one 3 s input patch: ``librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1``.
PATCH_FRAMES = 187


def generation() -> int:
    """How many embedder graphs this process has built (0 before the first): a Keras model built before the
    count last changed may be unusable (see the module doc), so load it again."""
    return _GENERATION


def front_end_params(clip_seconds: float) -> AudioParams:
    """musicnn's front end as :class:`AudioParams` for a window of ``clip_seconds`` seconds."""
    return AudioParams(sample_rate=SAMPLE_RATE, clip_seconds=clip_seconds, n_fft=N_FFT,
                       hop_length=HOP_LENGTH, n_mels=N_MELS)


def musicnn_input(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """musicnn's mel spectrogram of one decoded window.

    ``samples``: float32 mono audio at ``sample_rate`` Hz (the features stage's window). Returns the mel
    power, float16 array ``(frames, 96)`` (frames of hop 256 at 16 kHz, centred), rounded to float16 as
    musicnn's ``batch_data`` does before its log; :func:`log_compress` finishes it.
    """
    import soxr

    audio = np.asarray(samples, dtype=np.float32)
    if sample_rate != SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    params = front_end_params(len(audio) / SAMPLE_RATE)
    _, mel_basis = _filters(params)
    mel = np.asarray(mel_basis @ power_spectrogram(audio, params))
    return np.ascontiguousarray(mel.T).astype(np.float16)


def log_compress(mel16: np.ndarray) -> np.ndarray:
    """``log10(10000 * mel + 1)`` in float32, as musicnn's ``batch_data`` computes it from its float16 mel."""
    return np.log10(np.float32(10000) * mel16.astype(np.float32) + np.float32(1))


def patches(spectrogram: np.ndarray, n_frames: int = PATCH_FRAMES, max_patches: int | None = None) -> np.ndarray:
    """Non-overlapping patches of ``n_frames`` frames from ``spectrogram`` ``(frames, 96)``, float32
    ``(n, n_frames, 96)``: musicnn's ``batch_data`` with no overlap (a trailing part shorter than a
    patch is dropped). ``max_patches``: keep only that many, evenly spaced (first and last included).
    Raises ``ValueError`` for a spectrogram shorter than one patch."""
    starts = list(range(0, spectrogram.shape[0] - n_frames + 1, n_frames))
    if not starts:
        raise ValueError(f"a spectrogram of {spectrogram.shape[0]} frames is shorter than one "
                         f"{n_frames}-frame patch (3 s)")
    if max_patches is not None and max_patches < len(starts):
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, max_patches).round().astype(int)]
    return np.stack([spectrogram[s:s + n_frames] for s in starts]).astype(np.float32, copy=False)


@dataclass(frozen=True)
class ClipEmbedding:
    """One clip's vectors: ``embedding`` (float32, the layer's width) and ``tags`` (float32, 50)."""

    embedding: np.ndarray
    tags: np.ndarray


def _weights_dir(model: str) -> Path:
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("musicnn is not installed (pip install --no-deps musicnn==0.1.0)")
    folder = Path(list(spec.submodule_search_locations)[0]) / model
    if not (folder / ".index").is_file():
        raise RuntimeError(f"musicnn has no weights for {model} in {folder}")
    return folder


class Embedder:
    """musicnn ``model`` in a graph and session of its own; :meth:`embed` gives clips' embeddings.

    The session runs on the CPU with ``threads`` intra-op threads and one inter-op thread (its own
    thread pools: the process's eager TensorFlow is left alone), so the same input gives the same
    bits. Build it once per process with :meth:`shared` (a few seconds: graph and checkpoint).
    """

    def __init__(self, model: str = "MTT_musicnn", layer: str = "penultimate", threads: int = 1,
                 batch_clips: int = 1, max_patches: int | None = None) -> None:
        if model not in MODEL_LAYERS:
            raise ValueError(f"unknown musicnn model {model!r}; one of {', '.join(MODEL_LAYERS)}")
        if layer not in MODEL_LAYERS[model]:
            raise ValueError(f"model {model} has no layer {layer!r}; one of {', '.join(MODEL_LAYERS[model])}")
        self.model, self.layer, self.threads, self.batch_clips = model, layer, threads, batch_clips
        self.max_patches = max_patches
        self.name = embedding_name(model, layer, max_patches)
        self._lock = threading.Lock()
        self._session, self._input, self._outputs = self._build()

    @classmethod
    def shared(cls, model: str = "MTT_musicnn", layer: str = "penultimate", threads: int = 1,
               batch_clips: int = 1, max_patches: int | None = None) -> "Embedder":
        """The process's one embedder for these settings (built on first use, then reused)."""
        key = (model, layer, threads, batch_clips, max_patches)
        with _SHARED_LOCK:
            if key not in _SHARED:
                _SHARED[key] = cls(model, layer, threads, batch_clips, max_patches)
            return _SHARED[key]

    @classmethod
    def named(cls, name: str, threads: int = 1, batch_clips: int = 1) -> "Embedder":
        """The shared embedder whose :attr:`name` is ``name`` (``MODEL/LAYER`` or ``MODEL/LAYER/patches=N``,
        as ``features.embedding_model`` and a model bundle record it), with ``threads`` intra-op threads and
        ``batch_clips`` clips per run (the ``embedding`` config's, for the same bits as ``extract_features``);
        ``ValueError`` for another form."""
        model, layer, max_patches = parse_embedding_name(name)
        return cls.shared(model, layer, threads, batch_clips, max_patches)

    @classmethod
    def from_config(cls, config: EmbeddingConfig) -> "Embedder | None":
        """The shared embedder ``config`` asks for, or ``None`` when embeddings are off (or, by default,
        when musicnn is not installed)."""
        if not config.active:
            return None
        return cls.shared(config.model, config.layer, config.threads, config.batch_clips, config.max_patches)

    def _build(self) -> tuple[Any, Any, dict[str, Any]]:
        """musicnn's network in a graph of its own, its checkpoint restored into a session of its own:
        (session, input placeholder, outputs). Bumps :func:`generation` once the graph is begun, however
        the build ends."""
        ensure_keras2()   # musicnn's layers are tf.compat.v1 layers: Keras 2 (tf-keras) under TF 2.16
        import tensorflow as tf

        verbosity = tf.compat.v1.logging.get_verbosity()
        import musicnn.models as musicnn_models   # sets TensorFlow's log level at import: restored below

        tf.compat.v1.logging.set_verbosity(verbosity)
        graph = tf.Graph()
        try:
            with graph.as_default(), warnings.catch_warnings():
                warnings.simplefilter("ignore")   # tf.compat.v1.layers deprecation notices
                with tf.name_scope("model"):   # the stock extractor's scope (variable names do not depend on it)
                    x = tf.compat.v1.placeholder(tf.float32, [None, PATCH_FRAMES, N_MELS], name="patches")
                    layers = musicnn_models.define_model(x, False, self.model, N_TAGS)
                    tags = tf.nn.sigmoid(layers[0])
                    if self.layer == "tags":
                        feature = tags
                    elif "vgg" in self.model:   # pool5: (patches, 2, 1, 128) -> 256
                        feature = tf.compat.v1.layers.flatten(layers[5])
                    else:
                        feature = dict(zip(("mean_pool", "max_pool", "penultimate"), layers[6:9]))[self.layer]
                saver = tf.compat.v1.train.Saver()
                session_config = tf.compat.v1.ConfigProto(
                    intra_op_parallelism_threads=self.threads, inter_op_parallelism_threads=1,
                    use_per_session_threads=True, device_count={"GPU": 0})
                session = tf.compat.v1.Session(graph=graph, config=session_config)
                saver.restore(session, str(_weights_dir(self.model)) + "/")
        finally:   # Keras models built before the graph may be unusable now (module doc), whatever happened
            _count_build()
        graph.finalize()
        log.info("musicnn %s loaded (own graph and session, %d thread(s))", self.name, self.threads)
        return session, x, {"embedding": feature, "tags": tags}

    def embed(self, inputs: Sequence[np.ndarray]) -> list[ClipEmbedding]:
        """Embeddings of clips: ``inputs`` are :func:`musicnn_input` spectrograms (float16 ``(frames, 96)``,
        at least one 3 s patch each). Patches of ``batch_clips`` clips run together; each clip's vectors
        are the means over its patches (``max_patches`` of them, evenly spaced, when set). Raises
        ``ValueError`` for a clip shorter than one patch."""
        batches = [patches(log_compress(m), max_patches=self.max_patches) for m in inputs]
        out: list[ClipEmbedding] = []
        for start in range(0, len(batches), self.batch_clips):
            group = batches[start:start + self.batch_clips]
            with self._lock:   # one run at a time: the session's single thread is the budget
                result = self._session.run(self._outputs, {self._input: np.concatenate(group)})
            at = 0
            for clip in group:
                end = at + len(clip)
                out.append(ClipEmbedding(result["embedding"][at:end].mean(axis=0, dtype=np.float32),
                                         result["tags"][at:end].mean(axis=0, dtype=np.float32)))
                at = end
        return out

    def embed_samples(self, samples: np.ndarray, sample_rate: int) -> ClipEmbedding:
        """One decoded window's embedding (:func:`musicnn_input` then :meth:`embed`)."""
        return self.embed([musicnn_input(samples, sample_rate)])[0]


_SHARED: dict[tuple[str, str, int, int, int | None], Embedder] = {}
_SHARED_LOCK = threading.Lock()
#: Embedder graphs built in this process (:func:`generation`).
_GENERATION = 0
_GENERATION_LOCK = threading.Lock()


def _count_build() -> None:
    """One more embedder graph built in this process (:func:`generation`)."""
    global _GENERATION
    with _GENERATION_LOCK:
        _GENERATION += 1
