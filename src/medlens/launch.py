"""One process per GPU: how a training job with N GPUs runs N processes inside its one task.

A training script calls :func:`launch` with the job's ``gpu`` resource before it trains. With one
GPU or none it claims its devices (:mod:`medlens.devices`) and returns. With N > 1 it claims them,
then replaces itself with ``torch.distributed.run`` (torchrun), which starts the same script N times
with the environment accelerate and the Hugging Face Trainer read (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR/PORT); in those processes :func:`launch` returns at once. Replacing the process, rather
than waiting on a child, keeps one process tree: SLURM's SIGTERM reaches torchrun, which passes it
to every worker, and Snakemake sees torchrun's exit status as the job's.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, MutableMapping, Sequence

from medlens.devices import claim_gpus

__all__ = ["launch", "in_launcher", "torchrun_command"]

logger = logging.getLogger(__name__)


def in_launcher(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Whether this process is one of several started by torchrun or ``accelerate launch`` (both set LOCAL_RANK)."""
    return "LOCAL_RANK" in environ


def torchrun_command(nprocs: int, argv: Sequence[str], python: str = sys.executable) -> list[str]:
    """The command that runs ``argv`` (a script and its arguments) as ``nprocs`` processes on this node."""
    # --standalone: a private rendezvous on a free local port, so two such jobs on one node do not meet
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nprocs}", *argv]


def launch(
    gpus: int,
    *,
    argv: Sequence[str] | None = None,
    environ: MutableMapping[str, str] = os.environ,
    execve: Callable[[str, list[str], dict[str, str]], None] = os.execve,
) -> None:
    """Claim the job's GPUs; with more than one, re-run the calling script as one process per GPU.

    Returns in every process that trains: at once for zero or one GPU and in each torchrun worker.
    With ``gpus > 1`` the calling process does not return: it becomes torchrun (the GPUs it claimed
    stay claimed until torchrun exits). A machine without GPUs still gets ``gpus`` processes, on
    the CPU (gloo), which is how the tests exercise this path.

    Args:
        gpus: the job's ``gpu`` resource.
        argv: the script and its arguments; ``sys.argv`` by default.
        environ: the environment to read and pass on.
        execve: ``os.execve``, replaceable in tests.
    """
    if in_launcher(environ):
        return
    # the jobs load pretrained artefacts from the cache prefetch_weights filled; the hub is off limits to them
    logger.info("Hugging Face Hub offline: %s", environ.get("HF_HUB_OFFLINE", "unset"))
    claim_gpus(gpus, environ=environ)
    if gpus <= 1:
        return
    # Snakemake sets OMP_NUM_THREADS to the job's threads; the processes share them
    threads = int(environ.get("OMP_NUM_THREADS") or 1)
    environ["OMP_NUM_THREADS"] = str(max(1, threads // gpus))
    command = torchrun_command(gpus, list(argv if argv is not None else sys.argv))
    logger.info("starting %d processes (one per GPU): %s", gpus, " ".join(command))
    for handler in logging.getLogger().handlers:
        handler.flush()
    # SIGUSR1 (a scheduler's early warning) would kill torchrun; ignored here, the workers still get it:
    # they install their own handlers, and the scheduler signals every process of the job
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    execve(command[0], command, dict(environ))
