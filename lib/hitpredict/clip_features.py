"""One ``features`` row from one clip's bytes: decode the centre window, then the mel math.

The pure per-item function of extract_features (whose executor task calls it in a memory-capped
child process) and of ``hitpredict score FILE`` (which calls it in-process), so both give the
same bits for the same bytes. It never raises for a bad file: the row says ``failed`` and why.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from hitpredict.audio import AudioError, DecodedClip, decode_clip
from hitpredict.audio_params import AudioParams
from hitpredict.features import encode_mel, log_mel, summary_vector

#: Longest ``error_detail`` kept in a row (characters).
DETAIL_CHARS = 500


def failed_row(track_id: str, sha256: str | None, params: AudioParams) -> dict[str, Any]:
    """A ``features`` row with status ``failed`` and no error kind yet (the caller fills it in or
    makes the row ok): every column of the ``features`` table, ``audio_params`` as JSON."""
    return {
        "track_id": track_id, "audio_sha256": sha256, "status": "failed", "error_kind": None,
        "error_detail": None, "duration_s": None, "mel": None, "mel_shape": None, "summary": None,
        "audio_params": params.to_json(), "extracted_at": dt.datetime.now(dt.timezone.utc),
    }


def features_row(track_id: str, sha256: str | None, audio: bytes | None, params: AudioParams,
                 min_seconds: float, with_summary: bool = True,
                 decode: Callable[..., DecodedClip] | None = None) -> dict[str, Any]:
    """One ``features`` row for one preview's bytes ``audio``.

    Returns the row (every column of the ``features`` table): ``ok`` with ``mel`` (float16 bytes of the
    log-mel dB, ``n_mels`` x frames, shape in ``mel_shape``), ``duration_s`` (seconds of the source) and
    ``summary`` (``SUMMARY_SIZE`` floats; ``None`` unless ``with_summary``); or ``failed`` with its
    ``error_kind`` (the decoder's kind, ``decode_error`` when it ran out of memory, ``feature_error``
    for anything else) and ``error_detail``. ``min_seconds``: shortest audio accepted, seconds.
    ``decode`` (default :func:`~hitpredict.audio.decode_clip`) is called as
    ``decode(data, sample_rate, window_s, min_seconds)``.
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
    except AudioError as err:
        row["error_kind"], row["error_detail"] = err.kind, err.detail[:DETAIL_CHARS]
    except MemoryError as exc:  # the decoder's child process is memory-capped
        row["error_kind"], row["error_detail"] = "decode_error", f"ran out of memory: {exc}"[:DETAIL_CHARS]
    except Exception as exc:  # noqa: BLE001 - one bad file never kills the job
        row["error_kind"], row["error_detail"] = "feature_error", f"{type(exc).__name__}: {exc}"[:DETAIL_CHARS]
    return row
