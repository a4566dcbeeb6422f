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


def _kaggle_problems(tmp_path, monkeypatch, **settings):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")  # credentials present: only the definition is judged
    monkeypatch.setenv("KAGGLE_KEY", "k")
    cfg = DatasetConfig(source="kaggle", **settings)
    return dataset_problems("xr", cfg, tmp_path / "raw", source="my.yaml")


def test_a_kaggle_source_no_adapter_reads_is_named_before_the_download(tmp_path, monkeypatch):
    # was: the archive was downloaded (NIH: 42 GB) and prepare_datasets then asked for an adapter
    [problem] = _kaggle_problems(tmp_path, monkeypatch, slug="someone/other-xrays")
    assert str(problem).startswith(
        "my.yaml: datasets.xr.adapter: missing required key for source 'kaggle'; expected the format"
    )
    [problem] = _kaggle_problems(tmp_path, monkeypatch)
    assert "datasets.xr.adapter: missing required key" in str(problem)


def test_a_malformed_kaggle_slug_is_named_before_the_download(tmp_path, monkeypatch):
    [problem] = _kaggle_problems(
        tmp_path, monkeypatch, adapter="nih_chest_xray_sample", slug="https://kaggle.com/x"
    )
    assert str(problem) == (
        "my.yaml: datasets.xr.slug: 'https://kaggle.com/x' is not a Kaggle dataset slug; "
        "expected 'owner/dataset', e.g. nih-chest-xrays/sample"
    )


def test_a_kaggle_slug_an_adapter_knows_needs_no_adapter_key(tmp_path, monkeypatch):
    assert _kaggle_problems(tmp_path, monkeypatch, slug="nih-chest-xrays/sample") == []
    assert _kaggle_problems(tmp_path, monkeypatch, adapter="nih_chest_xray_sample") == []
