from __future__ import annotations

from pathlib import Path

import pytest

from helpers.experiment import make_experiment


@pytest.fixture(scope="session")
def experiment(tmp_path_factory) -> Path:
    """results/exp with pairs, a prepared parquet's store size and a tiny encoder (helpers.experiment)."""
    return make_experiment(tmp_path_factory.mktemp("results"))
