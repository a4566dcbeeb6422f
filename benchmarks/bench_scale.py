"""Memory of ``train_encoder`` as the dataset grows and as processes are added (CPU).

For each size (default 20,000 and 200,000 rows) the benchmark writes a ``pairs.parquet`` of random
64 px grey PNGs (incompressible, ~4.2 KB each, so the image bytes dominate as they do at MIMIC scale)
and trains the tiny encoder on it for a few steps in a separate job: one process, and two processes
under ``torchrun`` (gloo). A sampler thread reads every process of the job's ``/proc/<pid>/smaps_rollup``
every 0.1 s and keeps the peaks of the job's summed

* ``Pss_Anon``: memory the job owns (heap, Arrow buffers read into memory, tensors), and
* ``Pss``: that plus its fair share of file pages it has mapped (shared pages are divided between the
  processes that map them, so two processes mapping one file count it once).

Also measured on the largest size: the training loader's images/s alone (train_encoder's dataset,
sampler, collate and workers) against the training step's images/s, to show that random access to the
mapped split keeps up with the step.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_scale.py [--sizes 20000 200000]``; the
results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

CONFIG = {  # the tiny encoder: the data, not the model, is what grows
    "image_size": 32,
    "context_length": 24,
    "per_device_train_batch_size": 32,
    "max_steps": 40,
    "warmup_steps": 2,
    "eval_steps": 40,
    "save_steps": 40,
    "logging_steps": 10,
    "dataloader_num_workers": 2,
}
ROW_GROUP = 2000
EVAL_SAMPLES = 2000


def generate(path: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    """``n`` pairs of random grey PNGs, 98/1/1 train/val/test, written row group by row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from medlens.data.schema import PAIRS_SCHEMA

    rng = np.random.default_rng(seed)
    words = ["heart", "enlarged", "normal", "effusion", "left", "right", "no", "pneumothorax", "clear"]
    with pq.ParquetWriter(path, PAIRS_SCHEMA, compression="zstd") as writer:
        for start in range(0, n, ROW_GROUP):
            rows = []
            for i in range(start, min(n, start + ROW_GROUP)):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(buf, "PNG")
                u = rng.random()
                rows.append(
                    {
                        "id": f"scale/{i}",
                        "dataset": "scale",
                        "patient_id": f"p{i}",
                        "study_id": None,
                        "image": buf.getvalue(),
                        "width": size,
                        "height": size,
                        "modality": "chest_xray",
                        "view": "PA",
                        "text": " ".join(rng.choice(words, 12)) + ".",
                        "text_source": "report",
                        "labels": ["Cardiomegaly"] if u < 0.3 else ["No Finding"],
                        "meta": "{}",
                        "split": "train" if u < 0.98 else "val" if u < 0.99 else "test",
                    }
                )
            writer.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA))
    return path


def _rollup(pid: int) -> dict[str, int]:
    """Pss and Pss_Anon of one process, in bytes (0 for a process that has gone)."""
    out = {"Pss": 0, "Pss_Anon": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in out:
                    out[key] = int(value.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def run_job(pairs: Path, out: Path, nproc: int, stage: str = "train") -> dict[str, float]:
    """Run ``stage`` (train, or evaluate the trained ``out``) in a separate job of ``nproc`` processes; peak
    summed Pss/Pss_Anon (MiB) and wall seconds."""
    cmd = [sys.executable, __file__, stage, json.dumps(CONFIG), str(pairs), str(out)]
    if nproc > 1:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", *cmd[1:]]
    return measure(cmd)


def measure(cmd: list[str]) -> dict[str, float]:
    """Run ``cmd``; peak summed Pss/Pss_Anon (MiB) of its processes and wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"Pss": 0, "Pss_Anon": 0}
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(job.pid)
        while not done.is_set():
            try:
                pids = [root.pid, *(c.pid for c in root.children(recursive=True))]
            except psutil.NoSuchProcess:
                return
            totals = {"Pss": 0, "Pss_Anon": 0}
            for pid in pids:
                for key, value in _rollup(pid).items():
                    totals[key] += value
            for key in peaks:
                peaks[key] = max(peaks[key], totals[key])
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    log, _ = job.communicate()
    done.set()
    sampler.join()
    if job.returncode:
        raise SystemExit(f"job failed ({job.returncode}):\n{log[-4000:]}")
    return {
        "pss_mib": peaks["Pss"] / 2**20,
        "anon_mib": peaks["Pss_Anon"] / 2**20,
        "seconds": time.perf_counter() - start,
    }


def write_chat(folder: Path, n: int) -> Path:
    """A chat JSONL of ``n`` report conversations (~1 KB each, as convert_to_chat_format writes MIMIC's)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.png").write_bytes(b"png")
    rng = np.random.default_rng(0)
    words = [
        "heart",
        "size",
        "normal",
        "lungs",
        "clear",
        "no",
        "pleural",
        "effusion",
        "pneumothorax",
        "focal",
        "consolidation",
        "mild",
    ]
    with open(folder / "train.jsonl", "w") as f:
        for i in range(n):
            report = " ".join(rng.choice(words, 130))
            turns = [
                {"role": "user", "content": "<image>Write the findings of this chest radiograph."},
                {"role": "assistant", "content": report},
            ]
            f.write(json.dumps({"id": f"r{i}", "images": ["a.png"], "messages": turns}) + "\n")
    return folder / "train.jsonl"


def _chat(mode: str, chat: str, cache: str) -> None:
    """One decoder process's conversations, each read once as an epoch reads them: the list read_chat
    returned before, or the mapped records train_decoder reads now."""
    from medlens.data.chat_format import read_chat
    from medlens.data.mapped import MappedRecords, map_chat

    records = read_chat(chat) if mode == "list" else MappedRecords(map_chat(chat, cache))
    print(sum(len(records[i]["messages"][1]["content"]) for i in range(len(records))))


def loader_vs_step(pairs: Path, work: Path, batches: int = 60) -> dict[str, float]:
    """Images/s of train_encoder's loader alone, and of its training step on preloaded batches."""
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from medlens.config import EncoderConfig
    from medlens.data.datasets import PairsDataset, StepBatchSampler
    from medlens.data.mapped import map_split
    from medlens.models.encoders import create_encoder_for_training
    from medlens.train.contrastive import train_step
    from medlens.train.encoder import _collate
    from medlens.train.losses import ContrastiveLoss
    from medlens.train.schedules import create_optimizer

    torch.set_num_threads(1)
    cfg = EncoderConfig(**CONFIG)
    parts = create_encoder_for_training(cfg)
    dataset = PairsDataset(map_split(pairs, "train", work), parts.train_transform)
    batch = cfg.per_device_train_batch_size
    loader = DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(len(dataset), batch, batches),
        num_workers=cfg.dataloader_num_workers,
        collate_fn=_collate(parts.tokenizer),
    )
    stamps, kept = [], []
    for b in loader:
        stamps.append(time.perf_counter())
        if len(kept) < 4:
            kept.append(b)
    skip = 5  # worker start-up
    loader_rate = (len(stamps) - 1 - skip) * batch / (stamps[-1] - stamps[skip])
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(parts.model, create_optimizer(parts.model, cfg))
    loss_fn = ContrastiveLoss(cfg.loss)
    for b in kept[:2]:  # warm-up
        train_step(model, loss_fn, [b], accelerator)
        optimizer.step()
    start = time.perf_counter()
    for i in range(20):
        train_step(model, loss_fn, [kept[i % len(kept)]], accelerator)
        optimizer.step()
        optimizer.zero_grad()
    step_rate = 20 * batch / (time.perf_counter() - start)
    return {"loader_images_s": loader_rate, "step_images_s": step_rate}


def _train(config_json: str, pairs: str, out: str) -> None:
    from medlens.config import EncoderConfig
    from medlens.train.encoder import train_encoder

    train_encoder(EncoderConfig(**json.loads(config_json)), Path(pairs), Path(out))


def _evaluate(config_json: str, pairs: str, encoder: str) -> None:
    """evaluate_encoder on the test split, at most EVAL_SAMPLES rows of each split (as a quick trial would)."""
    from medlens.config import EvalConfig
    from medlens.evaluate.encoder import evaluate_encoder

    out = Path(encoder).with_name(Path(encoder).name + ".eval")
    out.mkdir(exist_ok=True)
    evaluate_encoder(
        EvalConfig(max_samples=EVAL_SAMPLES, bootstrap_samples=50),
        pairs,
        encoder,
        out_json=out / "encoder.json",
        out_per_label=out / "per_label.csv",
        out_roc=out / "roc.csv",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-loader", action="store_true", help="skip the loader-vs-step measurement")
    parser.add_argument("--chat-only", action="store_true", help="only the decoders' conversations")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}"
        )
        print("| job | rows | parquet MiB | processes | peak Pss MiB | peak Pss_Anon MiB | job s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print("| decoder conversations | rows | JSONL MiB | held as | peak Pss MiB | peak Pss_Anon MiB | s |")
        print("|---|---:|---:|---|---:|---:|---:|")
        for n in args.sizes:
            chat = write_chat(work / f"chat_{n}", n)
            for mode in ("list", "mapped"):
                r = measure(
                    [sys.executable, __file__, "chat", mode, str(chat), str(work / f"chat_{n}" / "mapped")]
                )
                print(
                    f"| train_decoder's records | {n:,} | {chat.stat().st_size / 2**20:.0f} | {mode} | "
                    f"{r['pss_mib']:.0f} | {r['anon_mib']:.0f} | {r['seconds']:.0f} |",
                    flush=True,
                )
        if args.chat_only:
            return
        for n in args.sizes:
            pairs = generate(work / f"pairs_{n}.parquet", n)
            mib = pairs.stat().st_size / 2**20
            for stage, nproc in (("train", 1), ("train", 2), ("evaluate", 1)):
                r = (
                    run_job(pairs, work / f"enc_{n}", nproc, stage)
                    if nproc == 1
                    else run_job(pairs, work / f"enc_{n}_{nproc}", nproc)
                )
                job = (
                    "train_encoder" if stage == "train" else f"evaluate_encoder ({EVAL_SAMPLES:,} rows/split)"
                )
                print(
                    f"| {job} | {n:,} | {mib:.0f} | {nproc} | {r['pss_mib']:.0f} | {r['anon_mib']:.0f} | "
                    f"{r['seconds']:.0f} |",
                    flush=True,
                )
        if not args.no_loader:
            r = loader_vs_step(pairs, work / "mapped")
            print(
                f"\nloader alone {r['loader_images_s']:.0f} images/s ({CONFIG['dataloader_num_workers']} workers); "
                f"training step {r['step_images_s']:.0f} images/s (one thread), on {max(args.sizes):,} rows"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["train"]:
        _train(*sys.argv[2:5])
    elif sys.argv[1:2] == ["evaluate"]:
        _evaluate(*sys.argv[2:5])
    elif sys.argv[1:2] == ["chat"]:
        _chat(*sys.argv[2:5])
    else:
        main()
