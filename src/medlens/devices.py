"""The GPUs of one job, chosen before torch initialises CUDA.

CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when it starts, and numbers the devices it lists from 0;
a job that sets it first sees only its own GPUs. Under SLURM the scheduler has already set it to the
job's allocation, and medlens leaves it alone. On one machine (``profiles/local``), Snakemake's
``gpu`` resource keeps the GPUs of the jobs running at once within what the machine has, and each
job claims that many free devices here, holding one lock file per device until it exits: two jobs
never share a GPU, even from two Snakemake runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import MutableMapping
from pathlib import Path

from medlens.errors import ConfigError, MedlensError

__all__ = ["claim_gpus", "count_gpus", "release_gpus", "visible_devices", "LOCK_DIR_ENV"]

logger = logging.getLogger(__name__)

LOCK_DIR_ENV = "MEDLENS_GPU_LOCK_DIR"
# one folder for every medlens run and user of the machine ($TMPDIR may be per user or per job)
_DEFAULT_LOCK_DIR = "/tmp/medlens-gpu-locks"
_held: list[int] = []  # descriptors of the lock files this process holds: exiting frees the devices


def visible_devices(environ: MutableMapping[str, str] = os.environ) -> list[str] | None:
    """The devices ``CUDA_VISIBLE_DEVICES`` lists (indices or UUIDs); None when it is unset (every GPU)."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [d.strip() for d in value.split(",") if d.strip()]


def count_gpus() -> int:
    """NVIDIA GPUs of this machine, counted from the driver's /proc entries (asking CUDA would start it)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return sum(1 for _ in gpus.iterdir()) if gpus.is_dir() else 0


def _try_lock(path: Path) -> int | None:
    # read-only, so that a lock file created by another user can be locked too
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.set_inheritable(fd, True)  # the claim outlives exec into torchrun (medlens.launch)
    return fd


def claim_gpus(
    n: int,
    *,
    environ: MutableMapping[str, str] = os.environ,
    devices: list[str] | None = None,
    lock_dir: str | os.PathLike | None = None,
    timeout: float | None = None,
    poll: float = 5.0,
) -> list[str]:
    """Give this process ``n`` GPUs of its own by setting ``CUDA_VISIBLE_DEVICES`` (call before CUDA starts).

    Under SLURM (``SLURM_JOB_ID`` set) the scheduler's choice stands. Elsewhere, ``n`` free devices are
    taken from those visible (all of the machine's when ``CUDA_VISIBLE_DEVICES`` is unset), waiting while
    other jobs hold them. ``n == 0`` hides every GPU, so that a CPU job cannot take memory on one that a
    GPU job holds. A machine without GPUs keeps the job on the CPU.

    Args:
        n: GPUs the job was given (its ``gpu`` resource).
        environ: the environment to read and set (the process's own by default).
        devices: the devices to choose from, instead of those visible (tests).
        lock_dir: where the lock files live; default ``$MEDLENS_GPU_LOCK_DIR`` or /tmp/medlens-gpu-locks.
        timeout: seconds to wait for free devices; None waits as long as it takes.
        poll: seconds between attempts while waiting.

    Returns:
        The devices claimed (as ``CUDA_VISIBLE_DEVICES`` now lists them); empty on the CPU.

    Raises:
        ConfigError: when the job asks for more GPUs than the machine shows.
        MedlensError: when ``timeout`` passes before enough devices are free.
    """
    # long: its docstring (each way a GPU can be given); the logic is 65 lines
    if n <= 0:
        environ["CUDA_VISIBLE_DEVICES"] = ""
        return []
    if "SLURM_JOB_ID" in environ:
        given = visible_devices(environ) or []
        logger.info("GPU(s) given by SLURM: CUDA_VISIBLE_DEVICES=%s", environ.get("CUDA_VISIBLE_DEVICES"))
        return given
    pool = devices if devices is not None else visible_devices(environ)
    if pool is None:
        pool = [str(i) for i in range(count_gpus())]
    if not pool:
        logger.warning("the job asks for %d GPU(s) but none is visible; it runs on the CPU", n)
        return []
    if n > len(pool):
        raise ConfigError(
            f"the job asks for {n} GPUs but {len(pool)} are visible ({','.join(pool)})",
            key="resources.gpus",
            expected=f"at most {len(pool)} (the local profile's `gpu` "
            "resource should not exceed the machine's GPUs)",
        )
    directory = Path(lock_dir or environ.get(LOCK_DIR_ENV) or _DEFAULT_LOCK_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    start, waiting = time.monotonic(), False
    while True:
        claimed: list[tuple[str, int]] = []
        for device in pool:
            fd = _try_lock(directory / f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', device)}.lock")
            if fd is not None:
                claimed.append((device, fd))
                if len(claimed) == n:
                    break
        if len(claimed) == n:
            break
        for _, fd in claimed:  # never hold some devices while waiting for others (two jobs would deadlock)
            os.close(fd)
        if timeout is not None and time.monotonic() - start >= timeout:
            raise MedlensError(
                f"{n} of the GPUs {','.join(pool)} were not free within {timeout:.0f} s "
                f"(lock files in {directory})"
            )
        if not waiting:
            logger.info(
                "waiting for %d free GPU(s) of %s (held by other jobs; lock files in %s)",
                n,
                ",".join(pool),
                directory,
            )
            waiting = True
        time.sleep(poll)
    _held.extend(fd for _, fd in claimed)
    names = [device for device, _ in claimed]
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(names)
    logger.info(
        "GPU(s) %s claimed (CUDA_VISIBLE_DEVICES=%s)", ",".join(names), environ["CUDA_VISIBLE_DEVICES"]
    )
    return names


def release_gpus() -> None:
    """Give back every device this process claimed (exiting does the same)."""
    while _held:
        os.close(_held.pop())
