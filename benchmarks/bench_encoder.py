"""Contrastive encoder training speed: medlens's ``train_encoder`` against open_clip's own training script.

Default (CPU) mode, one run, results as Markdown for docs/benchmarks.md:

* ``train_encoder`` and ``open_clip_train.main`` (from ``open_clip_torch[training]``) train the same
  tiny model (``medlens-tiny`` at 64 px, context 77) with the same batch, optimiser, schedule,
  augmentation (random-resized crop with scale (0.9, 1)), gradient clipping, loader workers and data
  (the same PNGs: in ``pairs.parquet`` for medlens, as files plus a CSV for open_clip). Each contender
  runs in its own process, alternately, ``--rounds`` times.
* Steps/s are read the same way for both: a forward pre-hook on the model stamps every training
  forward, and the rate is taken between the ``--skip``-th and the last step (start-up, loader
  warm-up and the final save are outside the window).
* medlens's data loading alone (the same dataset, sampler, collate and workers, no model) is timed
  the same way, to show that the loader outruns the training step.

On a GPU, benchmarks/bench_gpu.py measures the full-size presets (this script's former ``--gpu`` mode, which
timed the hybrid preset alone): medlens's step against a plain loop and open_clip's stock model, with compile
time, peak memory and MFU.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_encoder.py [--steps 40 --rounds 2]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL, IMAGE_SIZE, CONTEXT, BATCH, LR, WD, WARMUP, CROP = "medlens-tiny", 64, 77, 64, 1e-3, 0.1, 3, 0.9
FINDINGS = [
    "The heart is enlarged.",
    "Heart size is normal.",
    "Small left pleural effusion.",
    "No effusion.",
    "Right upper lobe nodule.",
    "The lungs are clear.",
    "Mild pulmonary edema.",
    "No pneumothorax.",
]


def write_data(folder: Path, n_train: int, n_val: int, seed: int = 0) -> None:
    """320 px grey PNGs with a shape per finding, as pairs.parquet and as files + CSV (open_clip's csv format)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image, ImageDraw

    from medlens.data.schema import PAIRS_SCHEMA

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows, lines = [], []
    for i in range(n_train + n_val):
        img = Image.new("L", (320, 320), rng.randint(20, 60))
        draw = ImageDraw.Draw(img)
        picks = rng.sample(range(len(FINDINGS)), 3)
        for k in picks:
            x, y = rng.randint(20, 240), rng.randint(20, 240)
            draw.ellipse([x, y, x + 20 + 8 * k, y + 30 + 5 * k], fill=100 + 15 * k)
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        text = " ".join(FINDINGS[k] for k in picks)
        split = "train" if i < n_train else "val"
        rows.append(
            {
                "id": f"bench/{i}",
                "dataset": "bench",
                "patient_id": f"p{i}",
                "study_id": None,
                "image": buf.getvalue(),
                "width": 320,
                "height": 320,
                "modality": "chest_xray",
                "view": "PA",
                "text": text,
                "text_source": "report",
                "labels": ["No Finding"],
                "meta": "{}",
                "split": split,
            }
        )
        if split == "train":
            path = folder / "images" / f"{i}.png"
            path.write_bytes(buf.getvalue())
            lines.append((str(path), text))
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA), folder / "pairs.parquet")
    with open(folder / "train.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["filepath", "title"])
        w.writerows(lines)


class StepClock:
    """Stamps every training-mode forward of a model (one per optimizer step when nothing accumulates)."""

    def __init__(self):
        self.stamps: list[float] = []

    def attach(self, model):
        model.register_forward_pre_hook(
            lambda m, args: self.stamps.append(time.perf_counter()) if m.training else None
        )
        return model

    def rate(self, skip: int) -> float:
        s = self.stamps
        if len(s) <= skip + 1:
            raise SystemExit(f"only {len(s)} steps recorded; raise --steps above --skip + 1")
        return (len(s) - 1 - skip) / (s[-1] - s[skip])


def run_medlens(data: Path, steps: int, workers: int, skip: int) -> float:
    from medlens.config import EncoderConfig
    from medlens.models import encoders
    from medlens.train.encoder import train_encoder

    clock, create = StepClock(), encoders.create_encoder

    def create_and_clock(cfg, **kwargs):
        model, model_cfg, preprocess_cfg = create(cfg, **kwargs)
        return clock.attach(model), model_cfg, preprocess_cfg

    encoders.create_encoder = create_and_clock
    cfg = EncoderConfig(
        model=MODEL,
        image_size=IMAGE_SIZE,
        context_length=CONTEXT,
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=LR,
        weight_decay=WD,
        warmup_steps=WARMUP,
        random_crop_scale=CROP,
        precision="fp32",
        dataloader_num_workers=workers,
        eval_steps=10 * steps,
        save_steps=10 * steps,
        logging_steps=100,
    )
    with tempfile.TemporaryDirectory() as out:
        train_encoder(cfg, data / "pairs.parquet", Path(out) / "encoder")
    return clock.rate(skip)


def run_open_clip(data: Path, steps: int, workers: int, skip: int) -> float:
    import open_clip_train.main as oc_main

    from medlens.models.registry import register_open_clip_configs

    register_open_clip_configs()  # medlens-tiny, as for medlens
    clock, create = StepClock(), oc_main.create_model_and_transforms

    def create_and_clock(*args, **kwargs):
        model, *transforms = create(*args, **kwargs)
        return clock.attach(model), *transforms

    oc_main.create_model_and_transforms = create_and_clock
    with tempfile.TemporaryDirectory() as logs:
        oc_main.main(
            [
                "--train-data",
                str(data / "train.csv"),
                "--dataset-type",
                "csv",
                "--csv-img-key",
                "filepath",
                "--csv-caption-key",
                "title",
                "--model",
                MODEL,
                "--force-image-size",
                str(IMAGE_SIZE),
                "--force-context-length",
                str(CONTEXT),
                "--batch-size",
                str(BATCH),
                "--epochs",
                "1",
                "--lr",
                str(LR),
                "--wd",
                str(WD),
                "--warmup",
                str(WARMUP),
                "--grad-clip-norm",
                "1.0",
                "--precision",
                "fp32",
                "--workers",
                str(workers),
                "--seed",
                "0",
                "--logs",
                logs,
                "--name",
                "bench",
                "--report-to",
                "",
                "--log-every-n-steps",
                "100",
            ]
        )
    return clock.rate(skip)


def run_loader(data: Path, steps: int, workers: int, skip: int) -> float:
    """Batches/s of train_encoder's training loader alone (same dataset, sampler, collate and workers)."""
    from torch.utils.data import DataLoader

    from medlens.config import EncoderConfig
    from medlens.data.datasets import PairsDataset, StepBatchSampler
    from medlens.data.mapped import map_split
    from medlens.models.encoders import create_encoder, create_tokenizer, image_transform
    from medlens.train.encoder import _collate

    cfg = EncoderConfig(model=MODEL, image_size=IMAGE_SIZE, context_length=CONTEXT, random_crop_scale=CROP)
    _, model_cfg, preprocess_cfg = create_encoder(cfg, device="meta")
    dataset = PairsDataset(
        map_split(data / "pairs.parquet", "train", data / "mapped"),
        image_transform(preprocess_cfg, train=True, crop_scale=CROP),
    )
    sampler = StepBatchSampler(len(dataset), BATCH, steps)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=_collate(create_tokenizer(cfg, model_cfg)),
    )
    stamps = []
    for _ in loader:
        stamps.append(time.perf_counter())
    return (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])


def _child(kind: str, data: str, steps: int, workers: int, skip: int) -> float:
    """Run one contender in a fresh interpreter (no shared caches, threads or imports between them)."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--data",
        data,
        "--steps",
        str(steps),
        "--workers",
        str(workers),
        "--skip",
        str(skip),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-4000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per training run")
    parser.add_argument(
        "--skip", type=int, default=5, help="steps left out of the timing window at the start"
    )
    parser.add_argument("--workers", type=int, default=2, help="data-loader processes of both contenders")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each contender")
    parser.add_argument("--child", choices=["medlens", "open_clip", "loader"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        runner = {"medlens": run_medlens, "open_clip": run_open_clip, "loader": run_loader}[args.child]
        print(runner(Path(args.data), args.steps, args.workers, args.skip))
        return

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        write_data(data, n_train=BATCH * args.steps, n_val=BATCH)
        rates = {"medlens": [], "open_clip": []}
        for _ in range(args.rounds):
            for kind in ("open_clip", "medlens"):
                rates[kind].append(_child(kind, tmp, args.steps, args.workers, args.skip))
        loader = _child("loader", tmp, args.steps, args.workers, args.skip)
    load_after = os.getloadavg()
    best = {k: max(v) for k, v in rates.items()}
    from medlens.models.registry import OPEN_CLIP_CONFIGS_DIR

    model_cfg = json.loads((OPEN_CLIP_CONFIGS_DIR / f"{MODEL}.json").read_text())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print(
        f"model {MODEL} at {IMAGE_SIZE} px, context {CONTEXT}, batch {BATCH}: vision {model_cfg['vision_cfg']}, "
        f"text {model_cfg['text_cfg']}"
    )
    print(
        f"`--steps {args.steps} --skip {args.skip} --workers {args.workers} --rounds {args.rounds}`; "
        f"all rates (steps/s): {json.dumps({k: [round(x, 3) for x in v] for k, v in rates.items()})}\n"
    )
    median = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    # each round runs the two back to back, so the ratio within a round sees (nearly) the same machine load
    paired = sorted(m / o for m, o in zip(rates["medlens"], rates["open_clip"], strict=True))
    print(
        f"medlens / open_clip_train per round: {', '.join(f'{r:.2f}' for r in paired)}; "
        f"median {paired[len(paired) // 2]:.2f}x; medlens faster in {sum(r > 1 for r in paired)} of {args.rounds}\n"
    )
    print(
        "| run | steps/s (best of rounds) | pairs/s | vs open_clip_train | median steps/s | vs open_clip_train |"
    )
    print("|---|---|---|---|---|---|")
    for kind, label in (
        ("open_clip", "open_clip_train (`open_clip_train.main`)"),
        ("medlens", "medlens `train_encoder`"),
    ):
        print(
            f"| {label} | {best[kind]:.3f} | {best[kind] * BATCH:.0f} | {best[kind] / best['open_clip']:.2f}x "
            f"| {median[kind]:.3f} | {median[kind] / median['open_clip']:.2f}x |"
        )
    print(
        f"| medlens training loader alone | {loader:.3f} batches/s | {loader * BATCH:.0f} | "
        f"{loader / best['medlens']:.1f}x medlens's best step rate | | |"
    )


if __name__ == "__main__":
    main()
