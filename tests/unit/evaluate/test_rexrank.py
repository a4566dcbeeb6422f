"""ReXrank export: one prediction per study, keyed as the leaderboard keys it, chest reports only."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medlens.data.schema import PAIRS_SCHEMA
from medlens.errors import DataError
from medlens.evaluate.rexrank import export_rexrank, read_generations


def _row(rid, study, view, *, modality="chest_xray", text_source="report", dataset="iu", meta="{}"):
    return {
        "id": f"{dataset}/{rid}",
        "dataset": dataset,
        "patient_id": "p",
        "study_id": study,
        "image": b"x",
        "width": 1,
        "height": 1,
        "modality": modality,
        "view": view,
        "text": f"reference of {study}",
        "text_source": text_source,
        "labels": [],
        "meta": meta,
        "split": "test",
    }


@pytest.fixture
def files(tmp_path):
    rows = [
        _row("CXR1_IM-1/0.png", "CXR1_IM-1", "LATERAL"),
        _row("CXR1_IM-1/1.png", "CXR1_IM-1", "PA"),
        _row("CXR2_IM-2/0.png", "CXR2_IM-2", None),
        _row("CXR2_IM-2/1.png", "CXR2_IM-2", None),
        _row("q7", None, None, text_source="vqa"),
        _row("knee/1L.png", None, None, modality="knee_xray", text_source="from_labels"),
    ]
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA), pairs)
    generations = tmp_path / "generations.jsonl"
    generations.write_text(
        "".join(json.dumps({"id": r["id"], "generated": f"generated for {r['id']}"}) + "\n" for r in rows)
    )
    return generations, pairs


def test_one_prediction_per_study_from_its_frontal_view_and_only_chest_reports(files, tmp_path):
    generations, pairs = files
    out = tmp_path / "rexrank.json"
    export_rexrank(generations, pairs, out)
    submission = json.loads(out.read_text())
    assert list(submission) == ["CXR1_IM-1", "CXR2_IM-2"]  # the VQA answer and the knee text are left out
    first = submission["CXR1_IM-1"]
    assert first["key_image_path"] == "CXR1_IM-1/1.png"  # the PA view, not the lateral listed first
    assert first["image_path"] == ["CXR1_IM-1/0.png", "CXR1_IM-1/1.png"]
    assert first["model_prediction"] == "generated for iu/CXR1_IM-1/1.png"
    assert first["split"] == "test" and first["report"] == "reference of CXR1_IM-1"
    # views unknown: the first image by id
    assert submission["CXR2_IM-2"]["key_image_path"] == "CXR2_IM-2/0.png"


def test_a_study_id_shared_by_two_datasets_and_a_bad_line_are_errors(tmp_path):
    rows = [_row("a.png", "S1", "PA", dataset="one"), _row("b.png", "S1", "PA", dataset="two")]
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA), pairs)
    generations = tmp_path / "g.jsonl"
    generations.write_text("".join(json.dumps({"id": r["id"], "generated": "x"}) + "\n" for r in rows))
    with pytest.raises(DataError, match="occurs in two datasets"):
        export_rexrank(generations, pairs, tmp_path / "out.json")
    generations.write_text('{"id": "one/a.png", "generated": "x"}\n{"id": "one/a.png"\n')
    with pytest.raises(DataError, match="g.jsonl.*2") as err:
        read_generations(generations)
    assert "not JSON" in str(err.value)
    assert not (tmp_path / "out.json").exists()


def test_entries_carry_the_reference_sections_rexranks_evaluation_reads(tmp_path, caplog):
    """ReXrank's evaluation (example_files/evaluation_script.md) builds its ground truth from each entry's
    section_findings and section_impression; a source without sections gets neither key and a warning."""
    sections = json.dumps({"sections": {"findings": "No effusion.", "impression": "Normal chest."}})
    only_impression = json.dumps({"sections": {"impression": "Normal chest."}})
    rows = [
        _row("s1/a.jpg", "50051329", "PA", meta=sections),
        _row("s2/b.jpg", "53492798", "AP", meta=only_impression),
        _row("r2gen/0.png", "CXR9_IM-9", None),  # no sections recorded
    ]
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA), pairs)
    generations = tmp_path / "g.jsonl"
    generations.write_text("".join(json.dumps({"id": r["id"], "generated": "x"}) + "\n" for r in rows))
    export_rexrank(generations, pairs, tmp_path / "out.json")
    got = json.loads((tmp_path / "out.json").read_text())
    ground_truth = {  # as ReXrank's split_json writes it
        k: f"Findings: {e['section_findings']} Impression: {e['section_impression']}"
        for k, e in got.items()
        if "section_findings" in e
    }
    assert (
        ground_truth
        == {
            "50051329": "Findings: No effusion. Impression: Normal chest.",
            "53492798": "Findings: None Impression: Normal chest.",  # a missing section is null, as ReXrank's files
        }
    )
    assert "section_impression" not in got["CXR9_IM-9"]
    assert "1 of 3 studies have no findings/impression sections" in caplog.text
    pq.write_table(
        pa.Table.from_pylist(
            [_row("x.png", "S", "PA", meta='{"sections": "No effusion."}')], schema=PAIRS_SCHEMA
        ),
        pairs,
    )
    generations.write_text(json.dumps({"id": "iu/x.png", "generated": "x"}) + "\n")
    with pytest.raises(DataError, match="meta.sections"):
        export_rexrank(generations, pairs, tmp_path / "bad.json")
