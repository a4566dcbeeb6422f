"""The results/ layout is written once (medlens.layout): the rules and the library take every path from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from medlens import layout

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT_TEMPLATES = [
    getattr(layout, name)
    for name in layout.__all__
    if isinstance(getattr(layout, name), str) and getattr(layout, name).startswith(layout.EXPERIMENT + "/")
]


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a Python file that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_rule_or_module_but_the_layout_spells_a_results_path():
    spelled = []
    for path in sorted((ROOT / "src" / "medlens").rglob("*.py")):
        if path.name != "layout.py":
            spelled += [f"{path}:{n}: {s!r}" for n, s in _code_strings(path) if re.match(r"results/[\w{]", s)]
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""["']results/[\w{]""", line.split("#")[0]):
                spelled.append(f"{path}:{n}: {line.strip()}")
    assert not spelled, "paths to take from medlens.layout:\n" + "\n".join(spelled)


@pytest.mark.parametrize("template", EXPERIMENT_TEMPLATES)
def test_an_output_found_on_disk_leads_back_to_its_experiment_and_its_siblings(tmp_path, template):
    # a template with a second wildcard, filled in
    template = template.replace("{stage}", "encoder").replace("{dataset}", "nih14")
    exp = tmp_path / "elsewhere" / "results" / "demo"
    path = layout.in_experiment(exp, template)
    assert path == tmp_path / "elsewhere" / Path(template.format(experiment="demo"))
    assert layout.experiment_of(path, template) == exp
    prepared = layout.PREPARED.format(dataset="mimic")
    assert layout.prepared_beside(exp, "mimic") == tmp_path / "elsewhere" / prepared


def test_a_path_outside_an_experiment_is_refused():
    with pytest.raises(ValueError, match="not a path inside an experiment folder"):
        layout.in_experiment("results/demo", layout.PREPARED)


def test_the_shared_folders_are_every_entry_of_results_outside_the_experiments():
    # every other entry of results/ is an experiment's folder (rule reject_unknown_experiment relies on it)
    assert layout.SHARED_FOLDERS == ("benchmarks", "logs", "paper", "prepared", "raw", "report.html")
