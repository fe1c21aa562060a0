"""The import graph keeps the shape ARCHITECTURE.md draws, checked by walking lib/'s source.

- data walks one way: no cycle between hitpredict's packages and top-level modules, and every import goes to
  the same layer of ARCHITECTURE.md's module map or a lower one (``LAYERS``);
- only the CLI and the stages reach ``hitpredict.stages``; the product never imports ``testing``;
- hitpredict modules are imported at the top of a module, where a reader sees the edge; only heavy
  third-party packages (TensorFlow, pyspark, ...) are imported inside functions, so a light path
  (``hitpredict score FILE``, the config) does not load them.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib"
#: Third-party packages a module may import inside a function, because a light path must not load them.
HEAVY = {"tensorflow", "tf_keras", "keras", "pyspark", "horovod", "petastorm", "mlflow", "matplotlib", "librosa",
         "py4j", "musicnn"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target]


def _top_level_nodes(tree: ast.Module) -> tuple[set[int], set[int]]:
    """Ids of the import statements at module level (module body, and inside module-level ``if``/``try``
    blocks), and of those among them that only a type checker runs (``if TYPE_CHECKING:``)."""
    found: set[int] = set()
    typing_only: set[int] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        stmt = pending.pop()
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            found.add(id(stmt))
        elif isinstance(stmt, ast.If) and getattr(stmt.test, "id", getattr(stmt.test, "attr", "")) == "TYPE_CHECKING":
            typing_only.update(id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom)))
            found.update(typing_only)
        elif isinstance(stmt, (ast.If, ast.Try)):
            pending.extend(stmt.body)
            pending.extend(stmt.orelse)
            for handler in getattr(stmt, "handlers", []):
                pending.extend(handler.body)
            pending.extend(getattr(stmt, "finalbody", []))
    return found, typing_only


def _scan() -> tuple[dict[str, set[str]], list[tuple[str, int, str]], dict[str, set[str]]]:
    """(module -> hitpredict modules it imports, function-level imports, module -> heavy packages at top)."""
    edges: dict[str, set[str]] = defaultdict(set)
    inner: list[tuple[str, int, str]] = []
    heavy_at_top: dict[str, set[str]] = defaultdict(set)
    for path in sorted((LIB / "hitpredict").rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        top, typing_only = _top_level_nodes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, module, path.name == "__init__.py"):
                root = target.split(".")[0]
                if root == "hitpredict":
                    edges[module].add(target)
                    if id(node) not in top:
                        inner.append((module, node.lineno, target))
                elif root in HEAVY and id(node) in top and id(node) not in typing_only:
                    heavy_at_top[module].add(root)
    return edges, inner, heavy_at_top


def _unit(module: str) -> str:
    """The package or top-level module a module belongs to: hitpredict.scoring.report -> scoring."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hitpredict"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


#: The layers of ARCHITECTURE.md's module map, lowest first: a unit (package or top-level module) imports only
#: from its own layer or a lower one. A new module is placed here when it is added.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "targets", "families", "audio_params", "schemas", "logs", "keras_compat", "config", "spark"),
    ("audio", "audio_paths", "body_decoding", "net_guard", "http_retry", "signed_urls", "features", "embeddings",
     "clip_features", "dataset", "evaluation", "ingest", "credentials", "isolation", "models", "plotting", "fetch", "loopback",
     "preview_server", "synth", "progress", "notebook"),
    ("lake",),
    ("sources", "fanouts", "train", "predict", "scoring", "stackcheck", "testing"),
    ("stages",),
    ("cli",),
    ("jobs",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


@pytest.fixture(scope="module")
def scanned():
    return _scan()


def test_no_cycle_between_packages(scanned):
    edges = scanned[0]
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in edges.items():
        for target in targets:
            a, b = _unit(module), _unit(target)
            if a != b and b != "hitpredict":
                graph[a].add(b)
    cycles = _cycles(graph)
    detail = []
    for component in cycles:
        members = set(component)
        detail.append(" <-> ".join(component) + ": " + "; ".join(
            sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts
                   if _unit(m) in members and _unit(t) in members and _unit(m) != _unit(t))))
    assert not cycles, "import cycles between packages:\n" + "\n".join(detail)


def test_data_walks_one_way_down_the_layers(scanned):
    edges = scanned[0]
    units = {_unit(m) for m in edges} | {_unit(t) for ts in edges.values() for t in ts}
    unplaced = sorted(units - set(RANK) - {"hitpredict"})
    assert not unplaced, f"place these in LAYERS (and in ARCHITECTURE.md's module map): {unplaced}"
    upward = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts
                    if _unit(t) != "hitpredict" and RANK[_unit(t)] > RANK[_unit(m)])
    assert not upward, "imports that walk up the layers:\n" + "\n".join(upward)


def test_only_the_cli_and_the_stages_reach_stages(scanned):
    edges = scanned[0]
    allowed = {"cli", "stages"}
    reaching = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts
                      if _unit(t) == "stages" and _unit(m) not in allowed)
    assert not reaching, "only hitpredict.cli and hitpredict.stages may import stages:\n" + "\n".join(reaching)


def test_the_product_never_imports_testing(scanned):
    edges = scanned[0]
    reaching = sorted(f"{m} -> {t}" for m, ts in edges.items() for t in ts
                      if _unit(t) == "testing" and _unit(m) != "testing")
    assert not reaching, "product code imports the test helpers:\n" + "\n".join(reaching)


def test_hitpredict_modules_are_imported_at_the_top(scanned):
    edges, inner, heavy_at_top = scanned
    # A module that loads a heavy package when imported may itself be imported lazily, by the same rule.
    heavy_modules = set(heavy_at_top)
    hidden = [f"{m}:{line} imports {t}" for m, line, t in inner
              if t not in heavy_modules and not any(t.startswith(h + ".") for h in heavy_modules)]
    assert not hidden, ("function-level imports of hitpredict modules hide the import graph; import at the "
                        "top:\n" + "\n".join(hidden))


def test_the_scan_sees_the_edges_it_checks(scanned):
    """The walk itself works: known edges are found, so an empty result above means something."""
    edges = scanned[0]
    assert "hitpredict.config" in edges["hitpredict.cli"]
    assert any(t.startswith("hitpredict.stages") for t in edges["hitpredict.cli"])
    assert RANK["cli"] > RANK["stages"] > RANK["scoring"] > RANK["lake"] > RANK["features"] > RANK["config"]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
