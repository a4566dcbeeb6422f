"""Throughput and memory of ``prepare_dataset`` against a naive single-process PIL loop (issue #4).

Run: ``.venv/bin/python benchmarks/bench_prepare.py [--n 2000] [--workers 2] [--append docs/benchmarks.md]``.

Generates ``--n`` chest-sized (1024 px) grey radiograph-like images, half PNG and half JPEG, with a
``manifest.csv``, then in one run and on the same files (page cache warmed first):

* naive: one process, ``Image.open -> convert("L") -> resize(longest side 320, LANCZOS) -> save PNG``;
* medlens: ``prepare_dataset`` with the manifest source and ``--workers`` processes (decode with JPEG
  draft mode, shrink, re-encode, validate, write parquet + rejected.csv);
* medlens again on the first quarter of the files, to show that peak memory does not grow with the
  number of images.

Peak memory is sampled every 20 ms as the RSS of the benchmark process and, separately, the summed
RSS of its worker processes. Prints a Markdown section; ``--append`` adds it to the given file.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from medlens.config import DatasetConfig
from medlens.data.prepare import prepare_dataset

SIZE = 1024
STORE = 320


def _radiograph(seed: int) -> Image.Image:
    """A 1024-px chest-like grey image: bright body, two darker lungs, soft ribs, noise; distinct per seed."""
    rng = np.random.default_rng(seed)
    h = SIZE if seed % 2 == 0 else int(rng.integers(820, 1000))
    y, x = np.mgrid[0:h, 0:SIZE].astype(np.float32)
    cx, cy = SIZE / 2 + rng.normal(0, 20), h / 2 + rng.normal(0, 20)
    body = 170 - 60 * ((x - cx) / (SIZE * 0.55)) ** 2
    lungs = sum(
        np.exp(-(((x - (cx + s * SIZE * 0.18)) / (SIZE * 0.13)) ** 2 + ((y - cy) / (h * 0.3)) ** 2))
        for s in (-1, 1)
    )
    ribs = 8 * np.sin(y / (h / 28) + rng.uniform(0, 6)) * lungs
    img = body - 90 * lungs + ribs + rng.normal(0, 4, (h, SIZE))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="L")


def _write(args: tuple[int, str]) -> str:
    i, folder = args
    name = f"img{i:05d}.{'png' if i % 2 == 0 else 'jpg'}"
    path = Path(folder) / name
    if not path.exists():
        img = _radiograph(i)
        tmp = path.with_name("." + name)
        img.save(tmp, format="PNG" if i % 2 == 0 else "JPEG", quality=95)
        os.replace(tmp, path)
    return name


def generate(folder: Path, n: int, workers: int) -> list[str]:
    """Write (or reuse) ``n`` images and a manifest; returns the image names."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers) as pool:
        names = list(pool.map(_write, [(i, str(folder / "images")) for i in range(n)], chunksize=16))
    with open(folder / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "text", "labels", "patient_id"])
        for i, name in enumerate(names):
            w.writerow(
                [
                    f"b{i:05d}",
                    f"images/{name}",
                    f"Synthetic radiograph number {i}. Lungs are clear.",
                    "No Finding",
                    f"p{i // 2}",
                ]
            )
    return names


class PeakMemory:
    """Samples the RSS of this process and the summed RSS of its children until stopped."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.parent, self.children = interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.parent = max(self.parent, me.memory_info().rss)
                self.children = max(
                    self.children, sum(c.memory_info().rss for c in me.children(recursive=True))
                )
            except psutil.NoSuchProcess:
                pass  # a worker exited between listing and reading
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def naive(folder: Path, names: list[str], out: Path) -> float:
    """The loop a script would write; returns seconds."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for name in names:
        img = Image.open(folder / "images" / name).convert("L")
        scale = STORE / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        img.save(out / (Path(name).stem + ".png"))
    return time.perf_counter() - start


def medlens(folder: Path, out: Path, workers: int, limit: int | None) -> tuple[float, int]:
    cfg = DatasetConfig(source="manifest", path=str(folder), store_size=STORE, limit=limit)
    start = time.perf_counter()
    summary = prepare_dataset(
        cfg, "bench", out / "raw", out / "bench.parquet", out / "bench.rejected.csv", workers=workers
    )
    return time.perf_counter() - start, summary.kept


def stored_kib(out: Path, naive_out: Path) -> tuple[float, float]:
    """Mean stored image size in KiB: (naive PNG files, images in the prepared parquet)."""
    files = list(naive_out.glob("*.png"))
    images = pq.read_table(out / "bench.parquet", columns=["image"]).column("image")
    return (
        sum(f.stat().st_size for f in files) / len(files) / 1024,
        pc.mean(pc.binary_length(images)).as_py() / 1024,
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


# in every --workdir this benchmark made: only such a folder is written into again (its images reused)
WORKDIR_MARK = ".bench_prepare"


def _own_workdir(path: Path) -> Path:
    """``--workdir`` when it is new, empty or made by this benchmark; any other folder holds someone's files,
    which the run would overwrite (``manifest.csv``, ``naive_out/``, ``medlens_out/``)."""
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / WORKDIR_MARK).is_file())):
        sys.exit(
            f"bench_prepare: --workdir {path}: not a folder this benchmark made (no {WORKDIR_MARK}); "
            "give a new or empty folder"
        )
    path.mkdir(parents=True, exist_ok=True)
    (path / WORKDIR_MARK).touch()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="images (half PNG, half JPEG)")
    parser.add_argument("--workers", type=int, default=2, help="prepare_dataset processes")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the generated images here (reused)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternating naive/medlens rounds; the best of each counts"
    )
    parser.add_argument("--append", type=Path, default=None, help="append the Markdown section to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    workdir = _own_workdir(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    t0 = time.perf_counter()
    names = generate(workdir, args.n, args.workers)
    generated = time.perf_counter() - t0
    on_disk = sum((workdir / "images" / n).stat().st_size for n in names)
    for name in names:  # warm the page cache so neither contender pays the first read
        (workdir / "images" / name).read_bytes()

    load_before = os.getloadavg()
    naive_times, full_times = [], []
    for _ in range(args.rounds):  # alternated, so load from other jobs hits both contenders alike
        with PeakMemory() as naive_mem:
            naive_times.append(naive(workdir, names, workdir / "naive_out"))
        with PeakMemory() as full_mem:
            t, kept = medlens(workdir, workdir / "medlens_out", args.workers, None)
            full_times.append(t)
    t_naive, t_full = min(naive_times), min(full_times)
    quarter = args.n // 4
    with PeakMemory() as quarter_mem:
        t_quarter, kept_quarter = medlens(workdir, workdir / "medlens_quarter", args.workers, quarter)
    load_after = os.getloadavg()
    if kept != args.n or kept_quarter != quarter:
        raise SystemExit(f"prepare kept {kept}/{args.n} and {kept_quarter}/{quarter} images; expected all")

    rate_naive, rate_full = args.n / t_naive, args.n / t_full
    kib_naive, kib_medlens = stored_kib(workdir / "medlens_out", workdir / "naive_out")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    lines = [
        f"## prepare_datasets vs a naive PIL loop ({dt.date.today().isoformat()})",
        "",
        f"`benchmarks/bench_prepare.py --n {args.n} --workers {args.workers} --rounds {args.rounds}`: {args.n} generated 1024 px grey "
        f"radiograph-like images ({args.n // 2} PNG, {args.n - args.n // 2} JPEG q95, {on_disk / 2**20:.0f} MiB), "
        f"stored at longest side {STORE}. Machine: {cpu}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}, "
        f"Pillow {Image.__version__}. Load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"(other engineers' jobs share the machine). "
        f"{'Images reused from --workdir' if generated < 5 else f'Images generated in {generated:.0f} s'}, "
        "page cache warmed. "
        f"{args.rounds} alternating round(s); best time of each shown (all: naive "
        f"{', '.join(f'{t:.1f}' for t in naive_times)} s, medlens {', '.join(f'{t:.1f}' for t in full_times)} s).",
        "",
        "| run | images | seconds | images/s | speed-up | stored KiB/image | peak RSS main | peak RSS workers (sum) |",
        "|---|---|---|---|---|---|---|---|",
        f"| naive loop, 1 process (open, convert L, LANCZOS resize, save PNG) | {args.n} | {t_naive:.1f} | "
        f"{rate_naive:.1f} | 1.00x | {kib_naive:.0f} | {_mib(naive_mem.parent)} | - |",
        f"| prepare_dataset, {args.workers} workers | {args.n} | {t_full:.1f} | {rate_full:.1f} | "
        f"{rate_full / rate_naive:.2f}x | {kib_medlens:.0f} | {_mib(full_mem.parent)} | {_mib(full_mem.children)} |",
        f"| prepare_dataset, {args.workers} workers (first quarter) | {quarter} | {t_quarter:.1f} | "
        f"{quarter / t_quarter:.1f} | - | - | {_mib(quarter_mem.parent)} | {_mib(quarter_mem.children)} |",
        "",
        f"Speed-up {rate_full / rate_naive:.2f}x (target >= 1.7x on 2 cores). Peak memory with {args.n} images vs "
        f"{quarter}: main {_mib(full_mem.parent)} vs {_mib(quarter_mem.parent)}, workers {_mib(full_mem.children)} "
        f"vs {_mib(quarter_mem.children)}: it does not grow with the number of images (row groups of 256 are "
        "written as they fill, and at most 4 batches of 8 images per worker are in flight). The naive loop saves "
        "PNG at zlib level 6, medlens at level 1 (faster, slightly larger files); the rest of the gain is JPEG "
        "draft decoding (1024 px JPEGs decode at 512 px) and the worker processes.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.append:
        if not args.append.exists():
            args.append.parent.mkdir(parents=True, exist_ok=True)
            args.append.write_text("# medlens benchmarks\n\n")
        with open(args.append, "a") as f:
            f.write("\n" + text)
    if args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
