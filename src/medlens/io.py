"""Atomic writes: a file or folder appears under its final name only when it is complete.

An interrupted job (killed, preempted, out of memory) must never leave an output that looks
finished, or Snakemake and resume logic would trust it.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_dir",
    "moved_aside",
    "write_json",
    "read_json",
    "sha256_file",
    "check_output",
]


# errors that say the output location cannot take the output, whatever was being written
_WRITE_FAULTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}


@contextlib.contextmanager
def _write_faults(path: Path) -> Iterator[None]:
    """Turn a full disk, a quota or a read-only folder while writing ``path`` into a MedlensError naming it."""
    try:
        yield
    except OSError as e:
        # a refused read of some input is that input's problem, not the output's
        out, failed = path.resolve(), Path(e.filename).resolve() if e.filename else None
        elsewhere = failed is not None and not (failed in (out, *out.parents) or failed.parent == out.parent)
        if e.errno not in _WRITE_FAULTS or (e.errno in (errno.EACCES, errno.EROFS) and elsewhere):
            raise
        from medlens.errors import MedlensError

        raise MedlensError(
            f"{path}: cannot be written: {_WRITE_FAULTS[e.errno]} ({e.filename or path}); "
            "free space, or point the output at a writable folder"
        ) from e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# <pid>@<host>, and under SLURM ~<job>.<restart count>; a bare <pid> is what medlens wrote before hosts were named
_STAMP = re.compile(r"(\d+)(?:@([\w.-]+?))?(?:~(\d+)\.(\d+))?", re.ASCII)
# the states of a SLURM job that has ended, so that none of its processes still writes (squeue --format %T)
_SLURM_ENDED = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "REVOKED", "TIMEOUT",
}  # fmt: skip


def _host() -> str:
    return re.sub(r"[^\w.-]", "_", socket.gethostname(), flags=re.ASCII)


def _stamp() -> str:
    """Who writes a temporary: ``<pid>@<host>``, and in a SLURM job ``~<job id>.<restart count>``, so that a
    job requeued or retried on another node knows its earlier run's leftovers from a live writer's."""
    stamp = f"{os.getpid()}@{_host()}"
    if job := os.environ.get("SLURM_JOB_ID"):
        stamp += f"~{job}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"
    return stamp


def _slurm_job_ended(job: str) -> bool:
    """Whether SLURM says job ``job`` has ended (or has forgotten it); False when it cannot be asked."""
    try:
        done = subprocess.run(
            ["squeue", "--noheader", "--jobs", job, "--format", "%T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0:
        return "invalid job id" in done.stderr.lower()  # purged: ended longer ago than MinJobAge
    states = set(done.stdout.split())
    return states <= _SLURM_ENDED  # none listed: neither pending nor running


def _stale(stamp: str) -> bool:
    """Whether the writer that stamped a temporary ``stamp`` is gone for sure."""
    m = _STAMP.fullmatch(stamp)
    if m is None:
        return False  # not a name medlens gives
    pid, host, job, restart = m.groups()
    if job is not None:
        if job == os.environ.get("SLURM_JOB_ID"):
            # an earlier run of this very job: SLURM requeues a job only once that run has ended
            if int(restart) < int(os.environ.get("SLURM_RESTART_COUNT", "0")):
                return True
        elif host != _host() and _slurm_job_ended(job):
            return True  # another job's, on another node (a retry of a failed job): SLURM says it has ended
    if host is None or host == _host():
        return not _alive(int(pid))
    return False  # another machine's process, which may be writing still


def _remove_stale(final: Path, kind: str) -> None:
    """Remove what killed medlens processes left for ``final``: ``.<name>.<kind>-<stamp>`` whose writer is gone
    (:func:`_stale`).

    The hidden, stamped names are medlens's own, so nothing a user made is ever matched.
    """
    prefix = f".{final.name}.{kind}-"
    for stale in final.parent.glob(f"{glob.escape(prefix)}*"):
        if _stale(stale.name[len(prefix) :]):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def moved_aside(path: str | os.PathLike) -> list[Path]:
    """The previous versions of folder ``path`` that :func:`atomic_dir` moved aside (``.<name>.old-<stamp>``)
    and a kill kept it from removing, newest first: what a reader falls back on when ``path`` is gone."""
    path = Path(path)
    found = [
        p for p in path.parent.glob(f".{glob.escape(path.name)}.old-*") if p.is_dir() and not p.is_symlink()
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it to ``path`` when the block succeeds.

    A temporary file that a killed process left for the same path is removed first.

    Args:
        path: the final file path.

    Yields:
        The temporary path to write to. It is removed if the block raises.

    Raises:
        MedlensError: naming ``path`` when its folder cannot take it (disk full, quota, read-only).
    """
    final = Path(path)
    with _write_faults(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(final, "partial")
    tmp = final.with_name(f".{final.name}.partial-{_stamp()}")
    try:
        with _write_faults(final):
            yield tmp
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder as ``.<name>.partial-<stamp>`` and rename it to ``path`` when the block succeeds.

    An existing ``path`` is replaced only after the new folder is complete: it is moved aside to
    ``.<name>.old-<stamp>`` (:func:`moved_aside` finds it if a kill comes between the two renames) and
    removed. The stamp names the process, its host and its SLURM job (:func:`_stamp`). Only these hidden,
    stamped names are ever removed, and only once their writer is gone for sure: its process ended on this
    host, or SLURM says its job has ended (a job requeued or retried on another node). A ``<name>.partial``
    or ``<name>.old`` beside the output is someone else's and stays.
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.partial-{_stamp()}")
    with _write_faults(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(final, "partial")
        if tmp.exists():  # this process's own, from a block that was interrupted
            shutil.rmtree(tmp)
        tmp.mkdir()
    try:
        with _write_faults(final):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{_stamp()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    # only now: until the new folder is in place, a previous version a killed writer moved aside may be the
    # only copy (a checkpoint resumed from it)
    _remove_stale(final, "old")


def write_json(obj: Any, path: str | os.PathLike, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON atomically (keys sorted, so equal data gives equal bytes)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike, *, expected: str = "the JSON object medlens wrote") -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises:
        DataError: naming the file when it is not UTF-8, not JSON or not an object (a damaged or foreign file).
    """
    from medlens.errors import DataError

    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 (byte {e.start})", file=str(path), expected=expected) from e
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e})", file=str(path), expected=expected) from e
    if not isinstance(value, dict):
        raise DataError(f"a JSON {type(value).__name__}, not an object", file=str(path), expected=expected)
    return value


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _refuse_places(
    p: Path, protect: Sequence[str | os.PathLike], inputs: Sequence[str | os.PathLike]
) -> None:
    """ConfigError naming ``--out`` when ``p`` is or holds the working folder, or an input; or is, holds or sits
    in a protected folder (:func:`check_output`)."""
    from medlens.errors import ConfigError

    target = p.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:  # "." by its path ($PWD, ../<name>) or above it
        raise ConfigError(
            f"'{p}' {'is' if target == cwd else 'holds'} the folder the command runs in",
            key="--out",
            expected="a path ending in a new name, e.g. ./export",
        )
    for guarded in protect:
        guarded = Path(guarded).resolve()
        if target == guarded or guarded in target.parents or target in guarded.parents:
            raise ConfigError(
                f"'{p}' would be written over the model folder {guarded}",
                key="--out",
                expected="a path outside the model it reads",
            )
    for given in inputs:
        read = Path(given).resolve()
        if target == read or target in read.parents:
            raise ConfigError(
                f"'{p}' is an input of the command ({given})"
                if target == read
                else f"'{p}' holds {given}, an input of the command",
                key="--out",
                expected="a path apart from the files it reads",
            )


def check_output(
    path: str | os.PathLike,
    *,
    folder: bool = False,
    overwrite: bool = False,
    protect: Sequence[str | os.PathLike] = (),
    inputs: Sequence[str | os.PathLike] = (),
    marks: Sequence[str] = (),
) -> Path:
    """Refuse an output target whose replacement would destroy what the command did not create.

    Args:
        path: the file (or, with ``folder``, the folder) a command will write, atomically.
        folder: whether the output is a folder.
        overwrite: the user's consent (``--overwrite``) to replace an existing file, or a non-empty folder that
            medlens wrote (one holding one of ``marks``).
        protect: folders the command reads (a model): the output may not be, hold or sit in one.
        inputs: files the command reads: the output may not be or hold one.
        marks: files one of which every folder this command writes holds (``export.json``).

    Returns:
        ``path``.

    Raises:
        ConfigError: naming ``--out`` and the path, whatever ``overwrite`` says for a device, a link, a
            file of the other kind, a protected folder, an input, the working folder or a folder holding it, a
            path under a file, or a non-empty folder without any of ``marks``; without ``overwrite`` for an
            existing target.
    """
    from medlens.errors import ConfigError

    p = Path(path)
    if p.name in ("", ".", ".."):  # "." or "..": replacing it would move the folder the command runs in
        raise ConfigError(
            f"'{p}' names no output of its own",
            key="--out",
            expected="a path ending in a new name, e.g. ./export",
        )
    _refuse_places(p, protect, inputs)
    above = next((a for a in p.parents if a.exists() or a.is_symlink()), None)
    if above is not None and not above.is_dir():  # the write would fail after all the work, naming no option
        raise ConfigError(
            f"'{p}' cannot be made: '{above}' is a file, not a folder",
            key="--out",
            expected="a path inside a folder",
        )
    if above is not None and not os.access(above, os.W_OK | os.X_OK):  # said now, not after the work
        raise ConfigError(
            f"'{p}' cannot be written: '{above}' is not writable",
            key="--out",
            expected="a path in a folder you can write to",
        )
    kind = "folder" if folder else "regular file"
    if p.is_symlink() or (p.exists() and not (p.is_dir() if folder else p.is_file())):
        raise ConfigError(
            f"'{p}' exists and is not a {kind}" + (" (a link)" if p.is_symlink() else ""),
            key="--out",
            expected=f"a new path or an existing {kind}",
        )
    if p.exists() and not overwrite and (not folder or any(p.iterdir())):
        raise ConfigError(
            f"'{p}' already exists" + (" and is not empty" if folder else ""),
            key="--out",
            expected="a new path, or --overwrite to replace it",
        )
    if folder and p.is_dir() and any(p.iterdir()) and not any((p / m).is_file() for m in marks):
        # --overwrite is consent to replace an earlier output, not any folder a typo names (a home, a dataset)
        if (p / "medlens.json").is_file():  # another experiment's trained model: hours of GPU time
            raise ConfigError(
                f"'{p}' is a trained model's folder (it holds medlens.json), so --overwrite does not replace it",
                key="--out",
                expected="a new path, or a folder an export wrote (it holds export.json)",
            )
        raise ConfigError(
            f"'{p}' was not written by medlens (it holds no {' or '.join(marks) or 'mark of it'}), so "
            "--overwrite does not replace it",
            key="--out",
            expected="a new path, or a folder this command wrote; remove this one yourself if it is to go",
        )
    return p
