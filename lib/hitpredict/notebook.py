"""What every notebook in ``notebooks/`` sets up first: its config, the folder its figures go to, and a
``display()`` that works on Databricks and in plain Python alike.

On Databricks the notebook's namespace holds ``dbutils``, ``display`` and ``displayHTML``: the config comes
from a ``conf`` widget (default ``databricks``) and figures are displayed in the notebook. In plain Python
(``python notebooks/01_catalogue.py``) the config comes from ``HITPREDICT_CONF`` (default ``local``, a bare name
being a shipped config), figures are saved under ``HITPREDICT_NOTEBOOK_OUT`` (default ``data/notebooks``)
``/<notebook>/<name>.png``, and the notebook prints the texts this module returns (figure paths, tables).
"""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from hitpredict.config import Config, load_config
from hitpredict.plotting import save_figure

#: The environment variable Databricks sets in every notebook's process.
DATABRICKS_RUNTIME_VARIABLE = "DATABRICKS_RUNTIME_VERSION"


@dataclass
class Notebook:
    """One notebook's setup: see :func:`open_notebook`."""

    name: str
    config: Config
    out: Path                                      #: where figures (and the report) of this notebook go
    platform_display: Callable[[Any], None] | None  #: the platform's ``display`` (Databricks, Jupyter), if any
    platform_display_html: Callable[[str], None] | None

    def display(self, obj: Any) -> str | None:
        """Show ``obj`` with the platform's ``display`` and return None; in plain Python, save a figure as
        ``out/<its label>.png`` or render a table (pandas or Spark), and return the text the notebook prints."""
        if self.platform_display is not None:
            self.platform_display(obj)
            return None
        if hasattr(obj, "savefig"):
            label = obj.get_label() or "figure"
            return f"figure: {save_figure(obj, self.out / f'{label}.png')}"
        if hasattr(obj, "toPandas"):
            return str(obj.toPandas().to_string(index=False))
        if hasattr(obj, "to_string"):
            return str(obj.to_string(index=False))
        return str(obj)

    def show_image(self, path: str | os.PathLike[str]) -> str | None:
        """Show a PNG that product code drew (the report's, training's plots) inline on Databricks and return
        None; elsewhere return the text the notebook prints (its path)."""
        path = Path(path)
        if self.platform_display_html is None:
            return f"figure: {path}"
        encoded = base64.b64encode(path.read_bytes()).decode()
        self.platform_display_html(f'<img src="data:image/png;base64,{encoded}">')
        return None


def open_notebook(name: str, namespace: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Notebook:
    """Set up the notebook ``name`` (e.g. ``01_catalogue``) whose global namespace is ``namespace``
    (pass ``globals()``): read its config, create its output folder, find the platform's display functions."""
    environ = os.environ if environ is None else environ
    on_databricks = DATABRICKS_RUNTIME_VARIABLE in environ and "dbutils" in namespace
    if on_databricks:
        widgets = namespace["dbutils"].widgets
        widgets.text("conf", "databricks", "config (a shipped name or a YAML path)")
        conf = widgets.get("conf")
    else:
        conf = environ.get("HITPREDICT_CONF", "local")   # a bare name is the shipped config of that name
    out_root = environ.get("HITPREDICT_NOTEBOOK_OUT") or ("/tmp/hitpredict-notebooks" if on_databricks
                                                          else "data/notebooks")
    out = Path(out_root) / name
    out.mkdir(parents=True, exist_ok=True)
    return Notebook(name=name, config=load_config(conf), out=out, platform_display=namespace.get("display"),
                    platform_display_html=namespace.get("displayHTML"))
