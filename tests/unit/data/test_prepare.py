"""prepare_dataset: process pool gives the same output as one process, with a bounded number of images in flight."""

from __future__ import annotations

import os
import signal

import pyarrow.parquet as pq
import pytest

from helpers.sources import manifest
from helpers.sources.run import prepare
from medlens.data import prepare as P
from medlens.data.sources import RawRecord
from medlens.errors import MedlensError


def _rows(n):
    return [
        {
            "id": f"r{i}",
            "image": f"r{i}.png",
            "text": f"Report {i}.",
            "labels": "No Finding",
            "patient_id": f"P{i % 7}",
        }
        for i in range(n)
    ]


def test_workers_give_the_same_parquet_as_one_process(tmp_path):
    fixture = manifest.build(tmp_path / "mine", _rows(40))
    one = prepare(tmp_path / "one", "mine", {"source": "manifest", "path": str(fixture.root)}, workers=1)
    two = prepare(tmp_path / "two", "mine", {"source": "manifest", "path": str(fixture.root)}, workers=2)
    a, b = pq.read_table(one.parquet), pq.read_table(two.parquet)
    assert a.column("id").to_pylist() == [f"mine/r{i}" for i in range(40)]  # input order kept
    assert a.equals(b)


@pytest.mark.timeout(
    120
)  # closing early once hung CI for its whole 90 minutes (multiprocessing.Pool.terminate)
def test_the_pool_reads_ahead_only_a_few_batches_and_stops_when_closed(tmp_path):
    fixture = manifest.build(tmp_path / "mine", _rows(1))
    image = str(fixture.root / "r0.png")
    pulled = 0

    def records():
        nonlocal pulled
        for i in range(10_000):
            pulled += 1
            yield RawRecord(native_id=str(i), image=image, text="x"), 32

    results = P._pool_map(records(), workers=2, batch_size=8)
    first = next(results)
    assert first[0].native_id == "0" and first[4] is None
    assert pulled <= 4 * 2 * 8 + 8  # the window, not the 10,000 records
    results.close()  # the consumer stops early (an error downstream): batches not started are cancelled
    assert pulled <= 4 * 2 * 8 + 8
    assert next(P._pool_map(records(), workers=2, batch_size=8))[0].native_id == "0"  # a new pool still works


def test_a_worker_killed_mid_batch_is_an_error_naming_the_records_in_flight(tmp_path, monkeypatch):
    fixture = manifest.build(tmp_path / "mine", _rows(1))
    image = str(fixture.root / "r0.png")
    process = P._process

    def killed_on_record_20(item):  # the OOM killer's SIGKILL, in the forked worker only
        if item[0].native_id == "20":
            os.kill(os.getpid(), signal.SIGKILL)
        return process(item)

    monkeypatch.setattr(P, "_process", killed_on_record_20)
    records = ((RawRecord(native_id=str(i), image=image, text="x"), 32) for i in range(200))
    with pytest.raises(MedlensError, match=r"died .* records '\d+' to '\d+' were in flight; .*fewer workers"):
        list(P._pool_map(records, workers=2, batch_size=8))


def test_counts_and_config_travel_in_the_parquet_footer(tmp_path):
    rows = _rows(6)
    rows[2]["text"] = ""
    fixture = manifest.build(tmp_path / "mine", rows)
    out = prepare(tmp_path / "out", "mine", {"source": "manifest", "path": str(fixture.root)}, workers=1)
    summary = P.read_prepared_summary(out.parquet)
    assert (summary["dataset"], summary["read"], summary["kept"], summary["rejected"]) == ("mine", 6, 5, 1)
    assert summary["reasons"] == {"empty text": 1} and summary["config"]["source"] == "manifest"
