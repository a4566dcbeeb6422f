"""radeval's vendored RadGraph, importable on a case-sensitive file system.

radeval 2.2.1 vendors a copy of RadGraph patched for transformers 5 (the `radgraph` package itself calls
tokenizer APIs transformers 5 removed), but the copy's modules import each other as ``RadEval.metrics...``,
the project's name on a case-insensitive macOS disk, so on Linux they fail with ``No module named
'RadEval'``. An import alias maps ``RadEval.*`` to the installed ``radeval.*`` modules (the same module
objects, not copies) until radeval fixes its imports.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

__all__ = ["vendored_radgraph"]


class _RadEvalAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolve ``RadEval.*`` to the installed ``radeval.*`` modules."""

    def find_spec(self, name, path, target=None):
        if name == "RadEval" or name.startswith("RadEval."):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("radeval" + spec.name[len("RadEval") :])

    def exec_module(self, module):
        pass


def vendored_radgraph() -> ModuleType:
    """``radeval.metrics.radgraph._vendor.core`` (``RadGraph``, ``F1RadGraph``, ``CACHE_DIR``), the alias
    installed once per process."""
    if not any(isinstance(finder, _RadEvalAlias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RadEvalAlias())
    return importlib.import_module("radeval.metrics.radgraph._vendor.core")
