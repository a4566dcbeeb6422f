"""Two CPU processes joined by gloo, for the tests.

``losses OUT``: each rank takes its half of a fixed global batch of features and writes its
ContrastiveLoss value and feature gradients, for the clip and the siglip loss. :func:`fork` runs it in
two processes forked from the test (they inherit its imports, so they start in milliseconds).
``train CONFIG_JSON PAIRS OUT``: ``train_encoder`` with the EncoderConfig fields in CONFIG_JSON, run
by :func:`launch` under ``torchrun --nproc_per_node 2``, the way a job launches medlens.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

GLOBAL_BATCH, DIM = 8, 16


def global_features(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm image and text features of the whole batch, the same on every process."""
    g = torch.Generator().manual_seed(seed)
    return (
        F.normalize(torch.randn(GLOBAL_BATCH, DIM, generator=g), dim=-1),
        F.normalize(torch.randn(GLOBAL_BATCH, DIM, generator=g), dim=-1),
    )


def losses(out: Path) -> None:
    import torch.distributed as dist

    from medlens.train.losses import ContrastiveLoss

    dist.init_process_group("gloo")  # from torchrun's environment, as accelerate does on CPU
    rank, world = dist.get_rank(), dist.get_world_size()
    rows = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    for kind in ("clip", "siglip"):
        img, txt = (x[rows].clone().requires_grad_(True) for x in global_features())
        scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-5.0, requires_grad=True)
        loss = ContrastiveLoss(kind, rank=rank, world_size=world)(img, txt, scale, bias)["contrastive_loss"]
        loss.backward()
        torch.save(
            {
                "loss": loss.item(),
                "img_grad": img.grad,
                "txt_grad": txt.grad,
                "scale_grad": scale.grad,
                "bias_grad": bias.grad,
                "world": world,
            },
            out / f"{kind}_rank{rank}.pt",
        )
    dist.destroy_process_group()


def train(config_json: str, pairs: str, out: str) -> None:
    from medlens.config import EncoderConfig
    from medlens.train.encoder import train_encoder

    train_encoder(EncoderConfig(**json.loads(config_json)), pairs, out)


def _forked_rank(rank: int, world: int, port: int, out: Path) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    losses(out)


def fork(out: Path, world: int = 2, timeout: int = 120) -> None:
    """Run ``losses`` in ``world`` forked processes that meet through torch's env:// rendezvous."""
    import multiprocessing
    import socket

    import open_clip.loss  # noqa: F401  imported once here; the forked ranks inherit it

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_forked_rank, args=(r, world, port, out)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    codes = [p.exitcode for p in procs]
    for p in procs:
        if p.is_alive():
            p.kill()
    if codes != [0] * world:
        raise AssertionError(f"forked ranks exited with {codes}")


def launch(*args: str, timeout: int = 600) -> None:
    """Run this file under ``torchrun --standalone --nproc_per_node 2`` (one thread per process)."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        __file__,
        *args,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise AssertionError(
            f"torchrun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )


if __name__ == "__main__":
    if sys.argv[1] == "losses":
        losses(Path(sys.argv[2]))
    else:
        train(*sys.argv[2:5])
