"""Local audio paths an untrusted ``audio_uri`` may name: allowed roots, system pseudo-files.

Pure functions shared by ingest (which rejects rows pointing outside the roots) and the
fetcher (which checks again when it reads, symlinks resolved).
"""
from __future__ import annotations

import os
from typing import Iterable
from urllib.parse import urlsplit

#: Local folders no audio_uri may read from, whatever the roots: kernel and device pseudo-files.
SYSTEM_ROOTS = ("/proc", "/sys", "/dev")


def real_roots(roots: Iterable[str]) -> tuple[str, ...]:
    """Local folders as real paths (symlinks resolved), ``file://`` stripped, without repeats."""
    out: dict[str, None] = {}
    for root in roots:
        path = root[len("file://"):] if root.startswith("file://") else root
        if path and "://" not in path:
            out[os.path.realpath(os.path.abspath(path))] = None
    return tuple(out)


def under(path: str, root: str) -> bool:
    """Whether real path ``path`` is ``root`` or inside it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def local_path(uri: str) -> str | None:
    """The local path an ``audio_uri`` names (a plain path or ``file://``), ``None`` for another scheme."""
    if "::" in uri:
        return None
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme == "":
        return uri
    if scheme == "file" and parts.netloc in ("", "localhost"):
        return parts.path
    return None


def outside_roots(path: str, roots: tuple[str, ...]) -> str | None:
    """Why absolute ``path`` may not be read under ``roots`` (real paths), or ``None`` if it may."""
    real = os.path.realpath(path)
    if any(under(real, root) for root in SYSTEM_ROOTS):
        return f"{path} is a system pseudo-file ({real})"
    if not any(under(real, root) for root in roots):
        return f"{path} is outside the allowed roots ({', '.join(roots) or 'none'}; ingest.allow_roots)"
    return None
