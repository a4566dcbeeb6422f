"""What the benchmarks share when they record results in docs/benchmarks.md: the machine's CPU name, and
their own ``## <title>`` section replaced (or appended), every other section left as it is. Imported by the
benchmarks run as scripts from this folder."""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (lscpu), for the machine line of a recorded result."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    model = re.search(r"Model name:\s*(.+)", out)
    return model.group(1).strip() if model else "unknown CPU"


def write_section(path: Path, title: str, section: str) -> None:
    """Replace the section of ``path`` that starts with ``title`` by ``section`` (or append it)."""
    text = path.read_text() if path.exists() else "# medlens benchmarks\n"
    start = text.find(title)
    if start >= 0:
        end = text.find("\n## ", start + len(title))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
