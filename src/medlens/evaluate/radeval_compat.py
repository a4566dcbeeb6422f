"""radeval, imported without reaching the network, and its vendored RadGraph, importable on Linux.

``import radeval`` calls ``nltk.download("punkt_tab")``, which fetches nltk's index from GitHub even when
the data is installed: on a compute node without internet that is an error at best and, behind a firewall
that drops packets, a wait with no timeout. None of the metrics medlens runs needs punkt (RadGraph
tokenises with nltk's regular-expression ``wordpunct_tokenize``), so :func:`radeval_module` imports radeval
with that call skipped.

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

__all__ = ["radeval_module", "vendored_radgraph"]


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


def radeval_module(name: str) -> ModuleType:
    """The module ``name`` of radeval, the package imported the first time without its nltk download."""
    if "radeval" not in sys.modules:
        import nltk

        download = nltk.download
        nltk.download = lambda *args, **kwargs: False
        try:
            importlib.import_module("radeval")
        finally:
            nltk.download = download
    return importlib.import_module(name)


def vendored_radgraph() -> ModuleType:
    """``radeval.metrics.radgraph._vendor.core`` (``RadGraph``, ``F1RadGraph``, ``CACHE_DIR``), the alias
    installed once per process."""
    if not any(isinstance(finder, _RadEvalAlias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RadEvalAlias())
    return radeval_module("radeval.metrics.radgraph._vendor.core")
