"""Writing a benchmark's results into docs/benchmarks.md: its own ``## <title>`` section replaced (or
appended), every other section left as it is. Imported by the benchmarks run as scripts from this folder."""

from __future__ import annotations

from pathlib import Path


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
