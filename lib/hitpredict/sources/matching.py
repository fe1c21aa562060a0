"""Is a search hit the track we asked for? Normalised titles and artists, compared."""
from __future__ import annotations

import difflib
import re
import unicodedata

_BRACKETS = re.compile(r"[\(\[][^\)\]]*[\)\]]")
_FEATURING = re.compile(r"\s+(feat\.?|ft\.?|featuring|with)\s.*$")
_VERSION = re.compile(r"\s+-\s+[^-]*(remaster|version|edit|mix|live|mono|stereo)[^-]*$")
_NOT_WORD = re.compile(r"[^\w\s]")
_SPACES = re.compile(r"\s+")


def normalise_name(text: str | None) -> str:
    """Lower case, no accents, no bracketed or "feat." parts, no version suffix, no punctuation.

    >>> normalise_name("Déjà Vu (feat. Jay-Z) - 2006 Remaster")
    'deja vu'
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = _VERSION.sub("", _BRACKETS.sub("", text))
    text = _FEATURING.sub("", text)
    text = _NOT_WORD.sub(" ", text).replace("_", " ")
    return _SPACES.sub(" ", text).strip()


def similarity(a: str | None, b: str | None) -> float:
    """0-1 similarity of two names after :func:`normalise_name`."""
    left, right = normalise_name(a), normalise_name(b)
    if not left or not right:
        return 0.0
    return difflib.SequenceMatcher(None, left, right).ratio()


def names_match(title: str, artist: str, hit_title: str, hit_artist: str, threshold: float) -> float | None:
    """The weaker of the title and artist similarities if both reach ``threshold``, else None."""
    score = min(similarity(title, hit_title), similarity(artist, hit_artist))
    return score if score >= threshold else None
