"""What keeps a dataset from being read, found when the DAG is built (medlens.data.access)."""

from __future__ import annotations

from medlens.config import DatasetConfig
from medlens.data.access import dataset_problems


def test_a_path_source_without_an_adapter_is_named_before_any_job(tmp_path):
    # was: found by prepare_datasets ("missing required key for source 'path'")
    cfg = DatasetConfig(source="path", path=str(tmp_path))
    [problem] = dataset_problems("knee", cfg, tmp_path / "raw", source="config/config.yaml")
    assert str(problem).startswith(
        "config/config.yaml: datasets.knee.adapter: a path source needs an adapter; expected the layout of its "
        "files, one of chest_xray_pneumonia, chexpert,"
    )
    assert (
        dataset_problems(
            "knee",
            DatasetConfig(source="path", path=str(tmp_path), adapter="knee_kl_oai"),
            tmp_path / "raw",
            source="config/config.yaml",
        )
        == []
    )


def test_a_placeholder_folder_is_named_as_such(tmp_path):
    cfg = DatasetConfig(source="path", path="/path/to/mimic", adapter="mimic_cxr")
    [problem] = dataset_problems("mimic", cfg, tmp_path / "raw", source="c.yaml")
    assert str(problem).startswith("c.yaml: datasets.mimic.path: '/path/to/mimic' is still the placeholder")
