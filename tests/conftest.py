"""Test-wide settings: offline, CPU, deterministic."""

from __future__ import annotations

import os
from pathlib import Path

# Any Hub call would hang ~50 s retrying; offline mode makes it fail at once (environment.md).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# tiny models gain nothing from a second thread, and on a busy machine it makes them many times slower
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The 110 real radiographs in ../shared/realdata (read in place, never copied into the repo)."""
    if not (REALDATA / "manifest.csv").is_file():
        pytest.skip(f"real data not found at {REALDATA}")
    return REALDATA
