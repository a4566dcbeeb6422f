"""The synthetic_cxr adapter through the real prepare stage: contract, determinism, bad settings."""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow.parquet as pq
import pytest

from medlens.config import FINDINGS, DatasetConfig, SyntheticConfig, from_dict
from medlens.data.phantom import sample_studies
from medlens.data.prepare import prepare_dataset, read_prepared_summary
from medlens.data.sources import get_adapter, list_adapters
from medlens.data.sources.synthetic_cxr import study_meta
from medlens.errors import ConfigError


def dataset(**synthetic) -> DatasetConfig:
    settings = {"n_images": 40, "n_patients": 15, "image_size": 64, "seed": 0, **synthetic}
    return DatasetConfig(source="synthetic_cxr", store_size=64, synthetic=SyntheticConfig(**settings))


def prepare(tmp_path, cfg: DatasetConfig, tag: str = "out", workers: int = 1):
    raw = tmp_path / "raw" / "phantoms"
    raw.mkdir(parents=True, exist_ok=True)
    out = tmp_path / f"{tag}.parquet"
    summary = prepare_dataset(cfg, "phantoms", raw, out, tmp_path / f"{tag}.rejected.csv", workers=workers)
    return out, summary


def test_adapter_is_registered():
    assert "synthetic_cxr" in list_adapters()
    assert get_adapter(dataset(), dataset="phantoms").name == "synthetic_cxr"


def test_prepared_rows_follow_the_data_contract(tmp_path):
    out, summary = prepare(tmp_path, dataset())
    assert (summary.read, summary.kept, summary.rejected) == (40, 40, 0)
    rows = pq.read_table(out).to_pylist()
    assert len({r["id"] for r in rows}) == 40
    assert len({r["patient_id"] for r in rows}) == 15
    for r in rows:
        assert r["id"] == f"phantoms/{r['study_id']}" and r["study_id"].startswith(r["patient_id"])
        assert (r["width"], r["height"], r["modality"], r["text_source"]) == (64, 64, "chest_xray", "report")
        assert r["view"] in ("PA", "AP")
        assert r["image"][:8] == b"\x89PNG\r\n\x1a\n"
        assert r["labels"] and set(r["labels"]) <= set(FINDINGS)
        assert r["text"].startswith("FINDINGS: ")
        meta = json.loads(r["meta"])
        assert meta["view"] == r["view"]
        assert ("Cardiomegaly" in r["labels"]) == (meta["cardiomegaly"] is not None)
        assert ("Pleural Effusion" in r["labels"]) == bool(meta["effusions"])
        assert ("Lung Lesion" in r["labels"]) == bool(meta["lesions"])
    assert read_prepared_summary(out)["adapter"] == "synthetic_cxr"


def test_same_seed_gives_byte_identical_parquet_with_any_number_of_workers(tmp_path):
    first, _ = prepare(tmp_path, dataset(), "one", workers=1)
    again, _ = prepare(tmp_path, dataset(), "two", workers=2)
    assert first.read_bytes() == again.read_bytes()


def test_different_seed_gives_different_images_and_reports(tmp_path):
    a, _ = prepare(tmp_path, dataset(seed=0), "a")
    b, _ = prepare(tmp_path, dataset(seed=1), "b")
    ta, tb = pq.read_table(a), pq.read_table(b)
    images_a, images_b = set(ta.column("image").to_pylist()), set(tb.column("image").to_pylist())
    assert not images_a & images_b
    assert ta.column("text").to_pylist() != tb.column("text").to_pylist()


def test_images_are_rendered_at_image_size_and_stored_at_store_size(tmp_path):
    cfg = replace(dataset(image_size=96, n_images=4, n_patients=2), store_size=48)
    out, _ = prepare(tmp_path, cfg)
    assert set(pq.read_table(out).column("width").to_pylist()) == {48}


def test_bad_settings_name_the_dataset_key(tmp_path):
    cfg = dataset(prevalence={"Edema": 1.5})
    with pytest.raises(ConfigError) as err:
        prepare(tmp_path, cfg)
    assert err.value.key == "datasets.phantoms.synthetic.prevalence.Edema"
    assert "[0, 1]" in str(err.value)


def test_unknown_keys_fail_when_the_config_is_read():
    with pytest.raises(ConfigError, match=r"datasets\.phantoms\.synthetic\.n_imgs"):
        from_dict(
            DatasetConfig,
            {"source": "synthetic_cxr", "synthetic": {"n_imgs": 5}},
            source="config/config.yaml",
            prefix="datasets.phantoms",
        )


def test_meta_describes_what_was_drawn():
    studies = sample_studies(SyntheticConfig(n_images=2000, n_patients=2000, seed=11))
    s = next(s for s in studies if s.findings.effusions and s.findings.lesions)
    meta = study_meta(s)
    assert meta["cardiothoracic_ratio"] == pytest.approx(s.findings.ctr)
    assert [e["side"] for e in meta["effusions"]] == [e.side for e in s.findings.effusions]
    assert [les["size_mm"] for les in meta["lesions"]] == [les.size_mm for les in s.findings.lesions]
    assert all(les["lobe"] for les in meta["lesions"])
