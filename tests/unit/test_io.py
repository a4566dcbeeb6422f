"""Atomic outputs: whole or absent, leftovers of killed writers removed, write faults named."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from medlens import io as mio
from medlens.errors import MedlensError


def test_a_full_disk_is_an_error_naming_the_output_and_leaves_nothing(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(mio.os, "replace", full)
    with (
        pytest.raises(MedlensError, match=r"out\.json: cannot be written: the disk is full .*free space"),
        mio.atomic_path(tmp_path / "out.json") as tmp,
    ):
        tmp.write_text("{}")
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_folder_is_named_but_an_unreadable_input_stays_its_own_error(tmp_path, monkeypatch):
    real_mkdir = mio.Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == tmp_path / "ro":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(mio.Path, "mkdir", read_only)
    with (
        pytest.raises(MedlensError, match=r"ro/x\.csv: cannot be written: the file system is read-only"),
        mio.atomic_dir(tmp_path / "ro" / "x.csv"),
    ):
        pass
    with pytest.raises(PermissionError), mio.atomic_path(tmp_path / "out" / "y.csv"):
        raise PermissionError(errno.EACCES, "Permission denied", "/elsewhere/input.csv")


def test_a_killed_writer_leaves_no_partial_file_behind_the_next_write(tmp_path):
    dead = tmp_path / ".out.parquet.partial-999999999"  # no such process
    live = tmp_path / f".out.parquet.partial-{os.getppid()}"  # a running one may still be writing
    dead.write_text("half")
    live.write_text("half")
    with mio.atomic_path(tmp_path / "out.parquet") as tmp:
        tmp.write_text("whole")
    assert not dead.exists() and live.exists() and (tmp_path / "out.parquet").read_text() == "whole"


def test_a_folder_output_removes_only_what_killed_medlens_writers_left(tmp_path):
    out = tmp_path / "share"
    mine = {name: tmp_path / name for name in ("share.partial", "share.old")}  # a user's folders
    for folder in mine.values():
        folder.mkdir()
        (folder / "KEEP.txt").write_text("notes")
    dead = {kind: tmp_path / f".share.{kind}-999999999" for kind in ("partial", "old")}
    for folder in dead.values():
        folder.mkdir()
    live = tmp_path / f".share.partial-{os.getppid()}"  # a running writer's
    live.mkdir()
    for version in ("first", "second"):  # a new folder, then a replacement
        with mio.atomic_dir(out) as tmp:
            (tmp / "model.txt").write_text(version)
    assert (out / "model.txt").read_text() == "second"
    assert all((folder / "KEEP.txt").read_text() == "notes" for folder in mine.values())
    assert not any(folder.exists() for folder in dead.values()) and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, *mine, live.name])


def _leftovers(folder: Path, stamps: dict[str, str]) -> dict[str, Path]:
    made = {}
    for what, stamp in stamps.items():
        made[what] = folder / f".ckpt.partial-{stamp}"
        made[what].mkdir()
    return made


def test_a_job_requeued_on_another_node_removes_its_earlier_runs_temporaries_and_no_live_writers(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(mio.socket, "gethostname", lambda: "node-b.cluster")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    monkeypatch.setenv("PATH", "/nonexistent")  # squeue is not asked about this job: its restart count says
    live = os.getppid()  # a pid that runs here, as the earlier run's may by chance
    left = _leftovers(
        tmp_path,
        {
            "earlier run": f"{live}@node-a.cluster~77.1",
            "first run": f"{live}@node-c.cluster~77.0",
            "this run, another node": f"{live}@node-a.cluster~77.2",  # a rank of this very run
            "no job, another node": f"{live}@node-a.cluster",  # nobody can tell
            "dead, this node": "999999999@node-b.cluster",
            "alive, this node": f"{live}@node-b.cluster",
        },
    )
    with mio.atomic_dir(tmp_path / "ckpt") as tmp:
        assert tmp.name == f".ckpt.partial-{os.getpid()}@node-b.cluster~77.2"
    kept = {what for what, folder in left.items() if folder.exists()}
    assert kept == {"this run, another node", "no job, another node", "alive, this node"}


def test_a_failed_jobs_temporaries_on_another_node_go_once_slurm_says_it_has_ended(tmp_path, monkeypatch):
    """Snakemake retries a failed job as a new job, maybe on another node: squeue says whether the old one ended."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text(
        "#!/bin/sh\n"
        'case "$3" in\n'
        "  41) echo COMPLETED ;;\n"  # still in slurmctld's memory
        "  42) echo RUNNING ;;\n"
        "  43) echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1 ;;\n"  # purged long ago
        "  44) echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1 ;;\n"
        "  45) ;;\n"  # listed in no state the default filter shows
        "esac\n"
    )
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(mio.socket, "gethostname", lambda: "node-b")
    monkeypatch.setenv("SLURM_JOB_ID", "50")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    left = _leftovers(tmp_path, {job: f"123@node-a~{job}.0" for job in ("41", "42", "43", "44", "45")})
    with mio.atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "state.json").write_text("{}")
    assert {job for job, folder in left.items() if folder.exists()} == {"42", "44"}
    monkeypatch.setenv("PATH", "/nonexistent")  # no squeue on the node: nothing another node wrote is touched
    left = _leftovers(tmp_path, {"41": "123@node-a~41.0"})
    with mio.atomic_dir(tmp_path / "ckpt"):
        pass
    assert left["41"].is_dir()


def test_a_name_with_glob_characters_matches_only_its_own_temporaries(tmp_path):
    other = tmp_path / ".export1.partial-999999999"  # what ".export[12].partial-*" would match as a pattern
    other.mkdir()
    with mio.atomic_dir(tmp_path / "export[12]") as tmp:
        (tmp / "a").write_text("x")
    assert other.is_dir() and (tmp_path / "export[12]" / "a").is_file()


def test_a_kill_between_the_renames_leaves_the_previous_folder_findable(tmp_path, monkeypatch):
    out = tmp_path / "ckpt"
    with mio.atomic_dir(out) as tmp:
        (tmp / "state.json").write_text("1")
    real_replace, calls = os.replace, []

    def killed_on_the_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job is killed after moving the old folder aside
        real_replace(src, dst)

    monkeypatch.setattr(mio.os, "replace", killed_on_the_second_rename)
    with pytest.raises(KeyboardInterrupt), mio.atomic_dir(out) as tmp:
        (tmp / "state.json").write_text("2")
    assert not out.exists()
    assert [(p / "state.json").read_text() for p in mio.moved_aside(out)] == ["1"]
    # the writer that died was this process: seen from a later one, its folder moved aside is stale, yet it
    # is the only copy, so it stays until a new folder is in place
    monkeypatch.setattr(mio.os, "replace", real_replace)
    monkeypatch.setattr(mio, "_alive", lambda pid: False)
    with pytest.raises(KeyboardInterrupt), mio.atomic_dir(out) as tmp:
        raise KeyboardInterrupt  # killed again, while writing the next version
    assert [(p / "state.json").read_text() for p in mio.moved_aside(out)] == ["1"]
    with mio.atomic_dir(out) as tmp:
        (tmp / "state.json").write_text("3")
    assert (out / "state.json").read_text() == "3" and mio.moved_aside(out) == []
