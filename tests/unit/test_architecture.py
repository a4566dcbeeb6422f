"""The layers of DESIGN.md as import contracts: no cycles, no import the design forbids, a light DAG build.

data knows no models, models know no training, evaluation reads checkpoints and never trainers, the
report reads outputs only, inference runs models without training or reporting, and the library knows
no Snakemake. Function-level imports count: they are imports all the same.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# package -> packages it may not import
FORBIDDEN = {
    "data": {"models", "train", "evaluate", "report", "inference", "cli"},
    "models": {"train", "evaluate", "report", "inference", "cli"},
    "evaluate": {"train", "report", "inference", "cli"},
    "report": {"models", "train", "inference", "cli"},
    "train": {"report", "inference", "cli"},
    "inference": {"train", "report", "cli"},
}
HEAVY = ("torch", "pyarrow", "polars", "transformers", "open_clip", "timm", "sklearn", "PIL")


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    base = SRC.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def import_graph() -> dict[str, set[str]]:
    """medlens module -> the medlens modules it imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SRC.joinpath("medlens").rglob("*.py"):
        mod = _module(path)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[mod] |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                subs = {f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")}
                graph[mod] |= subs or {base}
        graph[mod] = {d for d in graph[mod] if d.startswith("medlens") and not mod.startswith(d + ".")} - {
            mod
        }
    return graph


def test_no_import_crosses_a_layer_the_design_forbids():
    bad = []
    for mod, deps in import_graph().items():
        layer = mod.split(".")[1] if "." in mod else None
        for dep in deps:
            target = dep.split(".")[1] if "." in dep else None
            if target in FORBIDDEN.get(layer, ()):
                bad.append(f"{mod} imports {dep}")
    assert not bad, "\n".join(sorted(bad))


def test_the_library_knows_no_snakemake():
    for path in SRC.joinpath("medlens").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(n.split(".")[0] == "snakemake" for n in names), path


def test_there_is_no_import_cycle():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_building_the_dag_imports_nothing_heavy(repo):
    # what the Snakefile and the rule files import runs on every snakemake start, a dry run included
    sources = [repo / "Snakefile", *sorted((repo / "workflow" / "rules").glob("*.smk"))]
    modules = sorted({m for s in sources for m in re.findall(r"from (medlens[\w.]*) import", s.read_text())})
    assert modules and "medlens.config" in modules
    code = (
        f"import sys; [__import__(m) for m in {modules!r}]; print(sorted(set(sys.modules) & {set(HEAVY)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]", f"{modules} import {out}"


FUNCTION_LINES, FILE_LINES = 80, 400


def _reason_follows(lines: list[str], start: int, stop: int) -> bool:
    """A ``# long: <reason>`` comment among lines[start:stop] (0-based, stop exclusive)."""
    return any(re.match(r"\s*# long: \S", line) for line in lines[start:stop])


def test_a_long_function_or_file_says_why_at_its_top(repo):
    missing = []
    for path in sorted((repo / "src" / "medlens").rglob("*.py")):
        text = path.read_text()
        lines = text.split("\n")
        tree = ast.parse(text)
        rel = path.relative_to(repo)
        if len(lines) > FILE_LINES:
            doc_end = tree.body[0].end_lineno if tree.body and isinstance(tree.body[0], ast.Expr) else 0
            if not _reason_follows(lines, doc_end, doc_end + 2):
                missing.append(f"{rel}: {len(lines)} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                first = node.body[0]
                docstring = isinstance(first, ast.Expr) and isinstance(
                    getattr(first, "value", None), ast.Constant
                )
                # from the def line to the first statement, or to the line after the docstring
                stop = first.end_lineno + 1 if docstring else first.lineno - 1
                if length > FUNCTION_LINES and not _reason_follows(lines, node.lineno - 1, stop):
                    missing.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert not missing, "split these, or put '# long: <why>' at their top:\n" + "\n".join(missing)
