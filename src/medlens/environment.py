"""The Python environment that produced a result, against the lock it was installed from.

``make venv`` installs ``requirements.lock`` exactly and keeps a copy of it in the environment
(``<venv>/medlens.lock``). Every stage records :func:`record` next to what it wrote, so a number can
be traced to the exact version of every package that produced it; an environment that differs from
its lock (a package upgraded by hand, one missing, one the lock does not have) says so.

Only the standard library and ``packaging`` are imported: the check runs right after the install.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from medlens.errors import ConfigError

__all__ = [
    "LockDifferences",
    "read_lock",
    "installed_packages",
    "compare",
    "find_lock",
    "machine",
    "describe_machine",
    "record",
    "main",
]

# installed by the environment itself, not by the lock: the installer and medlens (an editable install)
_NOT_LOCKED = {"pip", "medlens"}
# the lock of the source checkout (an editable install); a venv's own copy wins (find_lock)
_REPO_LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"


@dataclass(frozen=True)
class LockDifferences:
    """How an environment departs from its lock (each list sorted by package name)."""

    missing: list[str] = field(default_factory=list)  # locked for this Python and platform, not installed
    different: list[dict[str, str]] = field(default_factory=list)  # {"name", "locked", "installed"}
    extra: list[dict[str, str]] = field(default_factory=list)  # {"name", "installed"}: not in the lock

    def __bool__(self) -> bool:
        return bool(self.missing or self.different or self.extra)

    def lines(self) -> list[str]:
        """One human-readable line per difference."""
        return (
            [f"{d['name']} {d['installed']} installed, {d['locked']} locked" for d in self.different]
            + [f"{name} locked, not installed" for name in self.missing]
            + [f"{d['name']} {d['installed']} installed, not in the lock" for d in self.extra]
        )


def _requirement_lines(text: str) -> list[tuple[int, str]]:
    """The requirement lines of a pip requirements file, continuation lines joined, options dropped."""
    out, pending, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line and not line.startswith("-"):
            out.append((start, line.split(" --hash", 1)[0].strip()))
    return out


def read_lock(path: str | os.PathLike, *, all_environments: bool = False) -> dict[str, str]:
    """``{normalised name: version}`` of a pip lock (``name==version ; marker`` lines with hashes).

    Args:
        path: the lock file.
        all_environments: keep every pinned line (a name pinned twice under different markers keeps the
            last); by default only the lines whose marker holds for this interpreter and platform.

    Raises:
        ConfigError: naming the file and line when a line is not an exact ``name==version`` pin.
    """
    path = Path(path)
    locked: dict[str, str] = {}
    for number, line in _requirement_lines(path.read_text()):
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            raise ConfigError(
                f"{path}:{number}: not a requirement ({e})", expected="name==version ; marker"
            ) from e
        spec = list(req.specifier)
        if len(spec) != 1 or spec[0].operator != "==" or "*" in spec[0].version:
            raise ConfigError(f"{path}:{number}: '{line}' is not an exact pin", expected="name==version")
        if all_environments or req.marker is None or req.marker.evaluate():
            locked[canonicalize_name(req.name)] = spec[0].version
    return locked


def installed_packages() -> dict[str, str]:
    """``{normalised name: version}`` of every distribution this interpreter can import from."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(
                canonicalize_name(name), dist.version
            )  # the first on sys.path is the one imported
    return dict(sorted(found.items()))


def compare(locked: dict[str, str], installed: dict[str, str]) -> LockDifferences:
    """What ``installed`` has that ``locked`` does not, and the reverse (pip and medlens itself ignored)."""
    missing = sorted(name for name in locked if name not in installed and name not in _NOT_LOCKED)
    different = [
        {"name": n, "locked": locked[n], "installed": installed[n]}
        for n in sorted(locked)
        if n in installed and n not in _NOT_LOCKED and installed[n] != locked[n]
    ]
    extra = [
        {"name": n, "installed": v} for n, v in installed.items() if n not in locked and n not in _NOT_LOCKED
    ]
    return LockDifferences(missing, different, extra)


def find_lock() -> Path | None:
    """The lock this environment was installed from: ``$MEDLENS_LOCK``, else the venv's copy, else the checkout's."""
    for candidate in (os.environ.get("MEDLENS_LOCK"), Path(sys.prefix) / "medlens.lock", _REPO_LOCK):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def machine() -> dict[str, Any]:
    """The machine a stage runs on. Training rounds differently from one CPU to another (torch picks its
    float kernels by instruction set, and two machines sold as one kind differed: docs/benchmarks.md), so
    a result names the CPU down to its family and model, and the kernels and threads torch used when torch
    is loaded (it is not imported here: the environment check runs before anything else is)."""
    cpu = _cpuinfo()
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_available()
    ids = ("vendor_id", "cpu family", "model", "stepping")
    return {
        "host": platform.node() or None,
        "cpu": cpu.get("model name") or platform.processor() or None,
        "cpu_id": ", ".join(f"{k} {cpu[k]}" for k in ids if k in cpu) or None,
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability() if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
    }


def describe_machine(m: dict[str, Any]) -> str:
    """One line for a :func:`machine` record (``medlens info``)."""
    text = f"{m.get('host') or 'unknown host'}: {m.get('cpu') or 'unknown CPU'}"
    text += f" ({m['cpu_id']})" if m.get("cpu_id") else ""
    if m.get("torch_cpu_capability"):
        text += f", torch kernels {m['torch_cpu_capability']}, {m.get('torch_threads')} threads"
    return text + (f"; {', '.join(m['gpus'])}" if m.get("gpus") else "")


def record(lock: str | os.PathLike | None = None) -> dict[str, Any]:
    """The environment a stage runs in, for its output's metadata.

    Returns:
        ``{"python", "platform", "machine", "lock", "lock_sha256", "matches_lock", "differences",
        "packages"}``: ``machine`` is :func:`machine`; ``packages`` is every installed distribution with its
        version; ``lock`` and ``lock_sha256`` are None (and ``matches_lock`` False) when no lock can be found.
    """
    path = Path(lock) if lock is not None else find_lock()
    installed = installed_packages()
    differences = compare(read_lock(path), installed) if path is not None else None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": machine(),
        "lock": None if path is None else str(path),
        "lock_sha256": None if path is None else _sha256(path),
        "matches_lock": differences is not None and not differences,
        "differences": None if differences is None else asdict(differences),
        "packages": installed,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m medlens.environment check [--lock PATH]``: exit 1 when a locked package is missing or
    at another version; packages the lock does not have are listed as a warning."""
    parser = argparse.ArgumentParser(prog="python -m medlens.environment")
    parser.add_argument("command", choices=["check"])
    parser.add_argument(
        "--lock", help="the lock to compare with (default: the one this environment came from)"
    )
    args = parser.parse_args(argv)
    path = Path(args.lock) if args.lock else find_lock()
    if path is None or not path.is_file():
        print(f"no lock found ({args.lock or 'requirements.lock'})", file=sys.stderr)
        return 1
    diff = compare(read_lock(path), installed_packages())
    for line in diff.lines():
        print(f"  {line}", file=sys.stderr)
    if diff.missing or diff.different:
        print(
            f"this environment is not the lock {path}: reinstall it (rm -r .venv && make venv)",
            file=sys.stderr,
        )
        return 1
    if diff.extra:
        names = " ".join(d["name"] for d in diff.extra)
        print(
            f"WARNING: packages the lock {path} does not have are installed; results built here will be marked "
            f"as not matching the lock. Remove them with: pip uninstall {names}",
            file=sys.stderr,
        )
    else:
        print(f"environment matches {path} (sha256 {_sha256(path)[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
