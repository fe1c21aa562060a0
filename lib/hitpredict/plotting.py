"""The one way hitpredict draws figures: matplotlib with the Agg backend (no display), PNG files.

matplotlib is imported lazily, by :func:`pyplot`, so importing a module that plots loads nothing heavy.
Training's evaluation plots (:mod:`hitpredict.train.plots`) and scoring's report plots
(:mod:`hitpredict.scoring.plots`) both draw through it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: Text properties for every string that comes from data (titles, artists, labels): matplotlib
#: would otherwise read two ``$`` as mathtext (``Ca$h #1`` by ``Ty Dolla $ign`` raises a
#: ParseException when the figure is drawn) and, under a matplotlibrc with ``text.usetex``,
#: hand the string to LaTeX.
PLAIN_TEXT: dict[str, Any] = {"parse_math": False, "usetex": False}


def pyplot() -> Any:
    """``matplotlib.pyplot``, with the non-interactive Agg backend selected (imported on first call)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` as a 100 dpi PNG and close it; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path
