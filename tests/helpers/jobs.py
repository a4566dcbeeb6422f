"""Watching and interrupting the jobs of a running workflow (the preemption and SLURM tests)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file


def edit_experiment(workdir: Path, edit: Callable[[dict], None]) -> None:
    """Apply ``edit`` to the tiny experiment of a working directory made by ``make_workdir``."""
    path = workdir / "experiments" / "tiny.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def wait_for(
    predicate: Callable[[], object],
    what: str,
    timeout: float,
    poll: float = 0.2,
    alive: Callable[[], bool] = lambda: True,
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s or once ``alive()`` is False."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if not alive():
            raise AssertionError(f"the workflow ended before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def last_step(log: Path) -> int:
    """The last ``step k/N`` progress line of a training log (0 before the first)."""
    steps = re.findall(r"\| step (\d+)/\d+ ", log.read_text()) if log.exists() else []
    return int(steps[-1]) if steps else 0


def script_pids(workdir: Path, rule: str) -> list[int]:
    """Python processes running ``rule``'s script for the workflow in ``workdir`` (Snakemake's temporary copy)."""
    marker = f"{workdir}/.snakemake/scripts/"
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone, or not a process
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if (
            args
            and "python" in Path(args[0]).name
            and any(a.startswith(marker) and a.endswith(f".{rule}.py") for a in args[1:])
        ):
            pids.append(int(proc.name))
    return pids


def assert_same_encoder(a: Path, b: Path) -> None:
    """Two encoder folders hold identical weights."""
    wa, wb = load_file(a / "open_clip_model.safetensors"), load_file(b / "open_clip_model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
