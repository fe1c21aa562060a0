"""One ``features`` row from one clip's bytes: decode the centre window, then the mel math.

The pure per-item function of extract_features (whose executor task calls it in a memory-capped
child process) and of ``hitpredict score FILE`` (which calls it in-process), so both give the
same bits for the same bytes. It never raises for a bad file: the row says ``failed`` and why.

With an :class:`~hitpredict.embeddings.Embedder` the row also gets the pretrained embedding. The
stage splits that work: its child computes musicnn's spectrogram (``embed_input``, kept in the row
under :data:`EMBED_INPUT`) and the parent runs the network (:func:`add_embeddings`), so TensorFlow
never runs under the child's memory cap. An embedder that fails on a clip never loses its mel: the
row stays ``ok`` with null ``embedding``/``tags``/``embedding_model`` and ``error_detail`` saying why.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Callable, Sequence

from hitpredict.audio import AudioError, DecodedClip, decode_clip
from hitpredict.audio_params import AudioParams
from hitpredict.embeddings import ClipEmbedding, Embedder, musicnn_input
from hitpredict.features import encode_mel, log_mel, summary_vector

log = logging.getLogger(__name__)

#: Longest ``error_detail`` kept in a row (characters).
DETAIL_CHARS = 500
#: Row key (not a column) holding ``(musicnn spectrogram, CPU seconds it took)`` until :func:`add_embeddings`.
EMBED_INPUT = "_embed_input"


def failed_row(track_id: str, sha256: str | None, params: AudioParams) -> dict[str, Any]:
    """A ``features`` row with status ``failed`` and no error kind yet (the caller fills it in or
    makes the row ok): every column of the ``features`` table, ``audio_params`` as JSON."""
    return {
        "track_id": track_id, "audio_sha256": sha256, "status": "failed", "error_kind": None,
        "error_detail": None, "duration_s": None, "mel": None, "mel_shape": None, "summary": None,
        "audio_params": params.to_json(), "extracted_at": dt.datetime.now(dt.timezone.utc),
        "embedding": None, "tags": None, "embedding_model": None,
    }


def embedding_failed(row: dict[str, Any], exc: BaseException) -> None:
    """Note on an ``ok`` row that its embedding could not be computed because of ``exc``: null ``embedding``,
    ``tags`` and ``embedding_model``, ``error_detail`` ``embedding failed: <kind>: <message>`` (the mel and
    summary stay)."""
    row["embedding"] = row["tags"] = row["embedding_model"] = None
    row["error_detail"] = f"embedding failed: {type(exc).__name__}: {exc}"[:DETAIL_CHARS]


def add_embeddings(rows: Sequence[dict[str, Any]], embedder: Embedder) -> float:
    """Fill ``embedding``, ``tags`` and ``embedding_model`` of the rows that hold :data:`EMBED_INPUT`
    (removing it), all in one :meth:`Embedder.embed` call; returns the CPU seconds spent (this process's,
    plus the front end's recorded in the rows). If the batch fails, each clip is retried alone, and a
    clip that still fails keeps its row ``ok`` with null embedding and a note in ``error_detail``."""
    started = time.process_time()
    todo, inputs, front_cpu = [], [], 0.0
    for row in rows:
        held = row.pop(EMBED_INPUT, None)
        if held is not None:
            todo.append(row)
            inputs.append(held[0])
            front_cpu += held[1]
    if not todo:
        return 0.0
    results: list[ClipEmbedding | None]
    try:
        results = list(embedder.embed(inputs))
    except Exception as exc:  # noqa: BLE001 - find the clip(s) at fault, one at a time
        log.warning("embedding a batch of %d clips failed (%s); retrying them one by one", len(todo), exc)
        results = []
        for row, spec in zip(todo, inputs):
            try:
                results.extend(embedder.embed([spec]))
            except Exception as one:  # noqa: BLE001 - this clip loses its embedding, never its mel
                embedding_failed(row, one)
                results.append(None)
    for row, result in zip(todo, results):
        if result is not None:
            row["embedding"], row["tags"] = result.embedding.tolist(), result.tags.tolist()
            row["embedding_model"] = embedder.name
    return time.process_time() - started + front_cpu


def features_row(track_id: str, sha256: str | None, audio: bytes | None, params: AudioParams,
                 min_seconds: float, with_summary: bool = True,
                 decode: Callable[..., DecodedClip] | None = None, embedder: Embedder | None = None,
                 embed_input: bool = False) -> dict[str, Any]:
    """One ``features`` row for one preview's bytes ``audio``.

    Returns the row (every column of the ``features`` table): ``ok`` with ``mel`` (float16 bytes of the
    log-mel dB, ``n_mels`` x frames, shape in ``mel_shape``), ``duration_s`` (seconds of the source) and
    ``summary`` (``SUMMARY_SIZE`` floats; ``None`` unless ``with_summary``); or ``failed`` with its
    ``error_kind`` (the decoder's kind, ``decode_error`` when it ran out of memory, ``feature_error``
    for anything else) and ``error_detail``. ``min_seconds``: shortest audio accepted, seconds.
    ``decode`` (default :func:`~hitpredict.audio.decode_clip`) is called as
    ``decode(data, sample_rate, window_s, min_seconds)``.

    ``embedder``: also compute the clip's pretrained ``embedding``, ``tags`` and ``embedding_model`` here
    (``hitpredict score FILE``; the same bits as the stage gives). ``embed_input``: only compute the
    embedder's spectrogram and keep it in the row under :data:`EMBED_INPUT`, for :func:`add_embeddings`
    (the stage's child). Either way an embedding failure leaves the row ``ok`` (see the module doc).
    """
    row = failed_row(track_id, sha256, params)
    try:
        clip = (decode or decode_clip)(audio or b"", params.sample_rate, params.clip_seconds, min_seconds)
        row["duration_s"] = clip.duration_s
        mel_db, power = log_mel(clip.samples, params)
        row["mel"], row["mel_shape"] = encode_mel(mel_db)
        if with_summary:
            row["summary"] = summary_vector(mel_db, power, params).tolist()
        row["status"] = "ok"
        if embedder is not None or embed_input:
            try:
                started = time.process_time()
                # only the audio: a short track's window is zero-padded, and silent patches are not the song
                heard = clip.samples[:max(1, round(min(clip.duration_s, params.clip_seconds) * clip.sample_rate))]
                row[EMBED_INPUT] = (musicnn_input(heard, clip.sample_rate), time.process_time() - started)
            except Exception as exc:  # noqa: BLE001 - the mel row stands without its embedding
                embedding_failed(row, exc)
            if embedder is not None:
                add_embeddings([row], embedder)
    except AudioError as err:
        row["error_kind"], row["error_detail"] = err.kind, err.detail[:DETAIL_CHARS]
    except MemoryError as exc:  # the decoder's child process is memory-capped
        row["error_kind"], row["error_detail"] = "decode_error", f"ran out of memory: {exc}"[:DETAIL_CHARS]
    except Exception as exc:  # noqa: BLE001 - one bad file never kills the job
        row["error_kind"], row["error_detail"] = "feature_error", f"{type(exc).__name__}: {exc}"[:DETAIL_CHARS]
    return row
