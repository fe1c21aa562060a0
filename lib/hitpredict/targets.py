"""The targets a model can be trained on: one row per target, read by every place that needs one.

A target names what ``build_dataset`` labels (``dataset.target``), the task a model learns for it,
the ``scores`` column a model of it fills and whether scoring explains it with segment importance.
Adding a target is one row here, one labelling rule in :mod:`hitpredict.dataset` and one test
(see ARCHITECTURE.md, "Add a target").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: What a model learns: a probability (sigmoid), a number (linear) or one of several classes (softmax).
Task = Literal["binary", "regression", "multiclass"]


@dataclass(frozen=True)
class Target:
    """One trainable target.

    name: the value of ``dataset.target`` and of a model bundle's ``target``.
    task: what the model's head learns (:data:`Task`).
    output_column: the ``scores`` column a model of this target fills.
    explained: whether scoring computes segment importance (occlusion) for it.
    label_column: the ``catalogue`` column its label is derived from.
    ranked: a multiclass target whose column lists the ``score.top_k_artists`` most probable classes with
        their probabilities, instead of the single most probable class.
    """

    name: str
    task: Task
    output_column: str
    explained: bool
    label_column: str
    ranked: bool = False


#: Every target, by name. The order is the order users see (config errors, the report).
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("popular", "binary", "prob_popular", explained=True, label_column="popularity"),
    Target("popularity", "regression", "popularity_pred", explained=True, label_column="popularity"),
    Target("artist", "multiclass", "similar_artists", explained=False, label_column="primary_artist",
           ranked=True),
    Target("region", "multiclass", "region", explained=False, label_column="region"),
)}


def target_named(name: str) -> Target:
    """The :class:`Target` called ``name``; ``KeyError`` with the known names otherwise."""
    try:
        return TARGETS[name]
    except KeyError:
        raise KeyError(f"unknown target {name!r}; targets: {', '.join(TARGETS)}") from None
