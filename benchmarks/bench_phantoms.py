"""Rendering speed of the synthetic_cxr phantoms on one core (issue #2: target >= 100 images/s at 320 px).

Run: ``.venv/bin/python benchmarks/bench_phantoms.py [--n 2000] [--size 320] [--write docs/benchmarks.md]``.

Pins itself to one CPU core, samples ``--n`` studies, writes their reports, then renders every image
(the picklable renderer ``prepare`` calls, without PNG encoding, which ``prepare`` times separately).
Wall-clock and CPU seconds are both reported because the machine is shared: on a loaded machine
the CPU time is the better measure of the renderer itself. Prints a Markdown section; ``--write``
puts it into the given file, replacing an earlier section of this benchmark and leaving the others.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from pathlib import Path

import numpy as np
import PIL
from docs_section import cpu_model, write_section  # this folder: the benchmarks run as scripts

from medlens.config import SyntheticConfig
from medlens.data.images import encode_image
from medlens.data.phantom import render_study, sample_studies, write_report

TITLE = "## synthetic_cxr phantoms: rendering speed on one core"


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run(n: int, size: int) -> str:
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})  # one core, as the issue asks
    load_before = os.getloadavg()[0]
    cfg = SyntheticConfig(n_images=n, n_patients=max(1, n * 2 // 5), image_size=size, seed=0)
    studies, sample_wall, sample_cpu = _timed(lambda: sample_studies(cfg))
    _, report_wall, report_cpu = _timed(lambda: [write_report(s) for s in studies])
    for s in studies[:20]:  # warm caches and lazy imports
        render_study(s, size)
    images, render_wall, render_cpu = _timed(lambda: [render_study(s, size) for s in studies])
    _, png_wall, png_cpu = _timed(lambda: [encode_image(img) for img in images[:200]])
    load_after = os.getloadavg()[0]
    per_image = np.array([render_wall, render_cpu]) / n

    rows = [
        ("sample studies", sample_wall, sample_cpu, n),
        ("write reports", report_wall, report_cpu, n),
        (f"render images ({size} px)", render_wall, render_cpu, n),
        ("encode PNG (as prepare does; first 200)", png_wall, png_cpu, 200),
    ]
    table = [
        "| step | images | wall s | CPU s | images/s (wall) | images/s (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for name, wall, cpu, count in rows:
        table.append(
            f"| {name} | {count} | {wall:.2f} | {cpu:.2f} | {count / wall:.0f} | {count / cpu:.0f} |"
        )
    verdict = "meets" if 1.0 / per_image[1] >= 100 else "misses"
    return "\n".join(
        [
            f"{TITLE} ({dt.date.today().isoformat()})",
            "",
            f"`benchmarks/bench_phantoms.py --n {n} --size {size}`: {n} phantoms of {cfg.n_patients} patients "
            f"(default prevalences, seed 0), rendered one after the other in one process pinned to core {core}. "
            f"Machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
            f"numpy {np.__version__}, Pillow {PIL.__version__}. Load average (1 min) {load_before:.2f} before, "
            f"{load_after:.2f} after (the machine is shared with other engineers' jobs, so wall time includes "
            f"waiting for the core; CPU time is the renderer's own).",
            "",
            *table,
            "",
            f"Rendering: {1000 * per_image[0]:.1f} ms/image wall, {1000 * per_image[1]:.1f} ms/image CPU, i.e. "
            f"{1 / per_image[1]:.0f} images/s on one core by CPU time, which {verdict} the target of 100 images/s.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--write", type=Path, help="Markdown file to put the section into")
    args = parser.parse_args()
    section = run(args.n, args.size)
    print(section)
    if args.write:
        write_section(args.write, TITLE, section)


if __name__ == "__main__":
    main()
