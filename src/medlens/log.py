"""Logging set-up for scripts and the CLI. The library only ever calls ``logging.getLogger``."""

from __future__ import annotations

import logging
import os
import sys
import warnings

__all__ = ["setup_logging"]

# open_clip_train's format: time, level, message.
_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"


def setup_logging(path: str | None = None, level: int = logging.INFO) -> None:
    """Send medlens (and library) logs to ``path`` (a Snakemake ``log:`` file) or stderr.

    Python warnings are routed into the log too, so a degraded path shows once in the job log.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    fmt, rank = _FORMAT, os.environ.get("RANK")
    if rank is not None:  # one of the processes of a multi-GPU job (medlens.launch): they share the job's log
        fmt = _FORMAT.replace("%(name)s", f"rank {rank} | %(name)s")
    if path:
        # the job's first process truncates the log; the processes torchrun starts after it append
        handlers = [logging.FileHandler(path, mode="a" if rank is not None else "w")]
        _log_uncaught_errors()
    logging.basicConfig(level=level, format=fmt, datefmt="%Y-%m-%d %H:%M:%S", handlers=handlers, force=True)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    # These libraries are chatty at INFO about things a user cannot act on.
    for name in ("PIL", "matplotlib", "urllib3", "filelock", "httpx", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _log_uncaught_errors() -> None:
    """Write an uncaught error's traceback to the job's log as well as to the console (where SLURM may not keep it)."""
    console_hook = sys.excepthook

    def hook(exc_type, exc, tb):
        if not issubclass(exc_type, KeyboardInterrupt):
            logging.getLogger("medlens").error("the job failed", exc_info=(exc_type, exc, tb))
        console_hook(exc_type, exc, tb)

    sys.excepthook = hook
