"""requirements.lock against pyproject.toml, and an environment against its lock."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from medlens.environment import compare, installed_packages, main, read_lock, record
from medlens.errors import ConfigError

# a combination the lock must avoid, and why (constraints.txt says the same)
KNOWN_BAD = {"kernels": "bitsandbytes fetches and runs a compiled CPU kernel from the hub through it"}


@pytest.fixture(scope="module")
def project(repo):
    return tomllib.loads((repo / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def direct(project):
    """Every requirement pyproject.toml names: the dependencies and every extra's."""
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    return reqs


def _via_project(lock_text: str) -> set[str]:
    """Packages the lock's annotations say pyproject.toml asks for (``# via medlens (pyproject.toml)``)."""
    found, current = set(), None
    for line in lock_text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==", line)
        if m:
            current = canonicalize_name(m.group(1))
        elif current and re.search(r"#\s+(via\s+)?medlens\b", line):
            found.add(current)
    return found


def test_every_requirement_of_pyproject_is_locked_within_its_bounds(repo, direct):
    locked = read_lock(repo / "requirements.lock", all_environments=True)
    for req in direct:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is in pyproject.toml but not in requirements.lock: run make lock"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]}, outside pyproject.toml's {req}: run make lock"
        )


def test_the_lock_holds_nothing_pyproject_no_longer_asks_for(repo, direct):
    lock_text = (repo / "requirements.lock").read_text()
    asked = {canonicalize_name(r.name) for r in direct}
    stale = _via_project(lock_text) - asked
    assert not stale, (
        f"requirements.lock has {sorted(stale)} for medlens, which pyproject.toml no longer names"
    )
    assert asked <= _via_project(lock_text)


def test_the_lock_pins_every_package_with_hashes_and_follows_the_constraints(repo):
    text = (repo / "requirements.lock").read_text()
    pins = re.findall(
        r"^([A-Za-z0-9_.-]+==\S+)[^\n]*\\\n((?:\s+--hash=sha256:[0-9a-f]{64}[^\n]*\n)+)", text, re.M
    )
    assert len(pins) == len(re.findall(r"^[A-Za-z0-9_.-]+==", text, re.M)) > 100
    locked = read_lock(repo / "requirements.lock", all_environments=True)
    # the constraints narrow what pyproject allows; the overrides replace a package's own requirement
    lines = [
        *(repo / "constraints.txt").read_text().splitlines(),
        *(repo / "overrides.txt").read_text().splitlines(),
    ]
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            assert req.specifier.contains(locked[canonicalize_name(req.name)]), f"the lock breaks {line}"
    for name, why in KNOWN_BAD.items():
        assert name not in locked, f"{name} is locked: {why}"
    assert "make lock" in text.splitlines()[1]  # regenerated on purpose, by the Makefile


def test_lock_lines_are_read_with_their_markers(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "a==1.0 ; python_version < '3'  \\\n    --hash=sha256:" + "0" * 64 + "\n"
        "    # via medlens\n"
        "A==2.0 ; python_version >= '3' \\\n    --hash=sha256:" + "1" * 64 + "\n"
        "Some_Thing==3 \\\n    --hash=sha256:" + "2" * 64 + " \\\n    --hash=sha256:" + "3" * 64 + "\n"
    )
    assert read_lock(lock) == {"a": "2.0", "some-thing": "3"}
    lock.write_text("a>=1.0\n")
    with pytest.raises(ConfigError, match=r"requirements.lock:1: 'a>=1.0' is not an exact pin"):
        read_lock(lock)


def test_differences_name_each_package_and_what_was_expected():
    diff = compare(
        {"torch": "2.14.1", "numpy": "2.4.6", "pip": "1"},
        {"torch": "2.15.0", "kernels": "0.19.1", "medlens": "0.1.0"},
    )
    assert diff.different == [{"name": "torch", "locked": "2.14.1", "installed": "2.15.0"}]
    assert diff.missing == ["numpy"] and diff.extra == [{"name": "kernels", "installed": "0.19.1"}]
    assert diff.lines() == [
        "torch 2.15.0 installed, 2.14.1 locked",
        "numpy locked, not installed",
        "kernels 0.19.1 installed, not in the lock",
    ]
    assert not compare({"a": "1"}, {"a": "1", "medlens": "0.1.0"})


def test_this_environment_is_the_lock(repo, capsys):
    # make venv installs the lock exactly; a test run in an environment that drifted says so here first
    assert main(["check", "--lock", str(repo / "requirements.lock")]) == 0, capsys.readouterr().err
    rec = record(repo / "requirements.lock")
    assert rec["matches_lock"] and rec["packages"]["torch"] == installed_packages()["torch"]
    assert len(rec["lock_sha256"]) == 64


def test_a_record_names_the_machine_down_to_the_cpu_model_and_torch_kernels(repo):
    import torch

    got = record(repo / "requirements.lock")["machine"]
    assert got["cpu_count"] == os.cpu_count() and got["host"]
    assert got["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert got["torch_threads"] == torch.get_num_threads() and got["gpus"] == []  # CPU-only CI
    if os.path.exists("/proc/cpuinfo"):
        assert "cpu family" in got["cpu_id"] and "model" in got["cpu_id"]


def test_a_package_at_another_version_fails_the_check(repo, tmp_path, capsys):
    text = (repo / "requirements.lock").read_text()
    torch = installed_packages()["torch"]
    lock = tmp_path / "requirements.lock"
    lock.write_text(text.replace(f"\ntorch=={torch} ", "\ntorch==0.0.1 ", 1))
    assert main(["check", "--lock", str(lock)]) == 1
    assert f"torch {torch} installed, 0.0.1 locked" in capsys.readouterr().err
    rec = record(lock)
    assert not rec["matches_lock"] and rec["differences"]["different"][0]["name"] == "torch"


def _wheel(folder, name: str, version: str, requires: tuple[str, ...] = ()):
    """A one-module pure-Python wheel, built by hand (no network, no build backend)."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files = {
        f"{name}/__init__.py": f"VERSION = '{version}'\n",
        f"{info}/METADATA": metadata + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for arc, text in files.items():
            z.writestr(arc, text)
    return path


def _install_sh(repo, venv, lock, wheels) -> subprocess.CompletedProcess:
    """env/install.sh of ``lock`` into ``venv``, from the wheels in ``wheels`` only."""
    env = {**os.environ, "PYTHON": sys.executable, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    return subprocess.run(
        [str(repo / "env" / "install.sh"), str(venv), str(lock)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_env_install_sh_installs_exactly_the_lock_and_refuses_a_wrong_hash(repo, tmp_path):
    # the script make venv and both container recipes run (env/medlens.def, env/Dockerfile)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    digest = hashlib.sha256(_wheel(wheels, "demo_pkg", "1.0").read_bytes()).hexdigest()
    _wheel(wheels, "demo_pkg", "2.0")  # newer, and not what the lock says
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"demo-pkg==1.0 \\\n    --hash=sha256:{digest}\n")
    venv = tmp_path / "venv"
    proc = _install_sh(repo, venv, lock, wheels)
    assert proc.returncode == 0, proc.stderr
    version = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import demo_pkg; print(demo_pkg.VERSION)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version == "1.0" and (venv / "medlens.lock").read_text() == lock.read_text()

    lock.write_text(f"demo-pkg==2.0 \\\n    --hash=sha256:{digest}\n")  # a file that is not the one locked
    proc = _install_sh(repo, tmp_path / "v2", lock, wheels)
    assert proc.returncode != 0 and "THESE PACKAGES DO NOT MATCH THE HASHES" in proc.stderr + proc.stdout


def test_env_install_sh_fails_on_a_broken_requirement_other_than_the_overridden_one(repo, tmp_path):
    # pip check may report only what overrides.txt overrides on purpose (medspacy/PyRuSH on spacy 3.8)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    digest = hashlib.sha256(_wheel(wheels, "demo_pkg", "1.0", ("other-pkg<1",)).read_bytes()).hexdigest()
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"demo-pkg==1.0 \\\n    --hash=sha256:{digest}\n")
    proc = _install_sh(repo, tmp_path / "venv", lock, wheels)
    assert proc.returncode != 0
    assert "pip check failed: demo-pkg 1.0 requires other-pkg" in proc.stderr


def test_the_container_recipes_and_make_venv_install_through_the_same_script(repo):
    assert "env/install.sh $(VENV) $(LOCK)" in (repo / "Makefile").read_text()
    for recipe in ("medlens.def", "Dockerfile"):
        text = (repo / "env" / recipe).read_text()
        assert "/opt/medlens/install.sh /opt/medlens/venv /opt/medlens/requirements.lock" in text, recipe
        assert "requirements.lock" in text.split("install.sh /opt")[0], recipe  # copied in before the install
