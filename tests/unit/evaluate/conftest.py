"""Fixtures of the evaluation tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """A Hugging Face cache and a radgraph cache holding nothing, the hub offline."""
    import huggingface_hub.constants as hf

    from medlens.evaluate.radeval_compat import vendored_radgraph

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(vendored_radgraph(), "CACHE_DIR", str(tmp_path / "radgraph"))
    return tmp_path
