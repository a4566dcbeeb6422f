"""Kaggle downloads and safe archive extraction for the ``kaggle`` source kind.

``download_kaggle`` fetches a dataset slug with the official client into
``results/raw/{dataset}/.download/`` and extracts it into ``results/raw/{dataset}/``. Credentials
are looked up (never read aloud: no value is printed, logged or put in an error) before the client
is imported, because ``kaggle.api.authenticate()`` calls ``exit(1)`` and importing ``kaggle``
prints a banner when none are found (environment.md section 8).

``extract_archive`` is hand-written rather than ``ZipFile.extractall``: the standard call neither
refuses ``../`` entries in every Python version nor resumes, and Kaggle archives of NIH-14 are
45 GB. Every entry is checked before anything is written (absolute paths and ``..`` refuse the
whole archive), link entries are never created, nothing is written through a link that leaves the
target, files are written under a temporary name and renamed, and a per-archive marker is written
only after the last entry, so a second run skips what is already complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from medlens.config import DatasetConfig
from medlens.errors import ConfigError, DataError, MedlensError
from medlens.io import atomic_path

__all__ = ["download_kaggle", "find_credentials", "extract_archive", "resolve_slug"]

logger = logging.getLogger(__name__)

_SLUG = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(/versions/\d+)?$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
DOWNLOAD_DIR = ".download"  # hidden, so adapters (which skip hidden names) never read the archives
_CHUNK = 1 << 20
# the most an archive may expand: image archives barely compress (about 1x), text and CSV about 10x, a zip
# bomb 1000x and more
_MAX_EXPANSION = 100

_HOW_TO = (
    "Kaggle credentials: create an API token at https://www.kaggle.com/settings/api and either "
    "save kaggle.json as ~/.kaggle/kaggle.json (chmod 600; KAGGLE_CONFIG_DIR moves that folder), "
    "or export KAGGLE_USERNAME and KAGGLE_KEY, or export KAGGLE_API_TOKEN"
)


def find_credentials(env: Mapping[str, str] | None = None, home: Path | None = None) -> str:
    """Where the Kaggle client will find credentials, without reading their values out.

    Args:
        env: the environment (``os.environ`` by default).
        home: the home folder (``~`` by default).

    Returns:
        A description of the source, e.g. ``"environment (KAGGLE_USERNAME/KAGGLE_KEY)"`` or the path
        of ``kaggle.json``.

    Raises:
        ConfigError: when there are none, or ``kaggle.json`` lacks ``username``/``key``; the message
            says how to set them and never contains a credential.
    """
    env = os.environ if env is None else env
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return "environment (KAGGLE_USERNAME/KAGGLE_KEY)"
    if env.get("KAGGLE_API_TOKEN"):
        return "environment (KAGGLE_API_TOKEN)"
    config_dir = Path(env.get("KAGGLE_CONFIG_DIR") or (home or Path.home()) / ".kaggle")
    token_file = config_dir / "access_token"
    if token_file.is_file() and token_file.stat().st_size > 0:
        return str(token_file)
    path = config_dir / "kaggle.json"
    if not path.is_file():
        raise ConfigError(
            f"no Kaggle credentials found (checked KAGGLE_USERNAME/KAGGLE_KEY, KAGGLE_API_TOKEN and {path})",
            key="credentials",
            expected=_HOW_TO,
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        # the parser's message can quote the file's text, i.e. the key: report only the exception type
        raise ConfigError(
            f"{path} is not readable JSON ({type(e).__name__})", key="credentials", expected=_HOW_TO
        ) from None
    if not isinstance(data, dict) or not data.get("username") or not data.get("key"):
        raise ConfigError(f"{path} lacks 'username' or 'key'", key="credentials", expected=_HOW_TO)
    return str(path)


def resolve_slug(cfg: DatasetConfig, name: str) -> str:
    """The dataset's ``slug``, or its adapter's default slug.

    Raises:
        ConfigError: when neither is set or the slug is not ``owner/dataset``.
    """
    from medlens.data.sources import get_adapter

    slug = cfg.slug or get_adapter(cfg, dataset=name).kaggle_slug
    if not slug:
        raise ConfigError(
            "missing required key",
            file="config/config.yaml",
            key=f"datasets.{name}.slug",
            expected=f"a Kaggle slug 'owner/dataset'; adapter '{cfg.adapter}' has no default",
        )
    if not _SLUG.match(slug):
        raise ConfigError(
            f"'{slug}' is not a Kaggle dataset slug",
            file="config/config.yaml",
            key=f"datasets.{name}.slug",
            expected="'owner/dataset', e.g. nih-chest-xrays/sample",
        )
    return slug


def _kaggle_api():
    """``kaggle.api``, imported with its stdout banner captured (it is logged, never printed)."""
    banner = io.StringIO()
    with contextlib.redirect_stdout(banner):
        import kaggle
    if banner.getvalue().strip():
        logger.debug("kaggle import printed: %s", banner.getvalue().strip().splitlines()[0])
    return kaggle.api


def download_kaggle(cfg: DatasetConfig, name: str, raw_dir: str | os.PathLike) -> dict:
    """Download a Kaggle dataset into ``raw_dir/.download`` and extract it into ``raw_dir``.

    A re-run after an interruption resumes: the client resumes a partial archive, and extraction
    skips entries already complete. The archive is deleted once its extraction is marked complete.

    Args:
        cfg: the dataset definition (``source: kaggle``, ``adapter``, optional ``slug``).
        name: its name in ``config/config.yaml``.
        raw_dir: ``results/raw/{dataset}``.

    Returns:
        What was done, for the download marker: slug, credential source, archives and file counts.

    Raises:
        ConfigError: when the slug or the credentials are missing.
        MedlensError: when the download fails (network, unknown slug, no access).
        DataError: when an archive is unsafe or unreadable.
    """
    raw_dir = Path(raw_dir)
    slug = resolve_slug(cfg, name)
    where = find_credentials()
    logger.info("dataset '%s': downloading Kaggle dataset %s (credentials from %s)", name, slug, where)
    download = raw_dir / DOWNLOAD_DIR
    download.mkdir(parents=True, exist_ok=True)
    api = _kaggle_api()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            api.authenticate()
            api.dataset_download_files(slug, path=str(download), unzip=False, quiet=True)
    except SystemExit as e:  # the client exits when it rejects the credentials
        raise ConfigError(
            f"the Kaggle client refused the credentials from {where}", key="credentials", expected=_HOW_TO
        ) from e
    except Exception as e:  # the client raises requests/HTTP/ValueError types for network and access errors
        raise MedlensError(
            f"datasets.{name}: downloading Kaggle dataset '{slug}' failed "
            f"({type(e).__name__}: {e}); check the slug, that you accepted its rules on "
            f"kaggle.com, and that api.kaggle.com is reachable"
        ) from e
    archives = sorted(
        p for p in download.iterdir() if p.is_file() and p.name.lower().endswith(_ARCHIVE_SUFFIXES)
    )
    if not archives:
        raise MedlensError(
            f"datasets.{name}: the Kaggle client wrote no archive for '{slug}' into {download}"
        )
    files = 0
    for archive in archives:
        result = extract_archive(archive, raw_dir)
        files += result.files
        archive.unlink()
    return {"slug": slug, "archives": [a.name for a in archives], "files": files}


# --------------------------------------------------------------------------------------------
# extraction


@dataclass
class ExtractResult:
    files: int  # regular files in the archive (extracted now or found complete)
    skipped_links: int  # symbolic/hard links and special files, never created
    resumed: int  # files found complete from an earlier, interrupted run


@dataclass
class _Entry:
    name: str  # normalised relative POSIX path
    size: int
    kind: str  # "file", "dir", "link", "other"
    handle: object  # ZipInfo or TarInfo


def _safe_name(raw: str, archive: Path) -> str:
    """The entry's relative path, or DataError when it is absolute or climbs out with ``..`` (zip-slip)."""
    name = raw.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or _DRIVE.match(name) or ".." in parts:
        raise DataError(
            f"archive entry '{raw}' points outside the extraction folder (absolute path or '..')",
            file=str(archive),
            row=raw,
            expected="entries with relative paths inside the archive; the archive was not extracted",
        )
    return "/".join(p for p in parts if p not in ("", "."))


def _entries(archive: Path) -> tuple[list[_Entry], object]:
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)  # noqa: SIM115 (closed by extract_archive once every entry is written)
        entries = []
        for info in zf.infolist():
            mode = info.external_attr >> 16
            kind = "dir" if info.is_dir() else "link" if stat.S_ISLNK(mode) else "file"
            entries.append(_Entry(_safe_name(info.filename, archive), info.file_size, kind, info))
        return entries, zf
    try:
        tf = tarfile.open(archive)  # noqa: SIM115 (closed by extract_archive)
    except (tarfile.TarError, OSError) as e:
        raise DataError(
            f"not a readable zip or tar archive ({type(e).__name__}: {e})",
            file=str(archive),
            expected="a .zip or .tar(.gz/.bz2/.xz) file",
        ) from e
    entries = []
    for info in tf.getmembers():
        kind = (
            "dir"
            if info.isdir()
            else "file"
            if info.isfile()
            else "link"
            if info.issym() or info.islnk()
            else "other"
        )
        entries.append(_Entry(_safe_name(info.name, archive), info.size, kind, info))
    return entries, tf


def _inside(target: Path, root: Path) -> Path:
    """``target`` after resolving links; DataError when a link already on disk leads it out of ``root``."""
    resolved = target.resolve()
    if not resolved.is_relative_to(root):
        raise DataError(
            f"'{target}' resolves to '{resolved}', outside the extraction folder (through a link)",
            file=str(target),
            expected=f"paths inside {root}",
        )
    return resolved


def _open_member(container: object, entry: _Entry) -> IO[bytes]:
    if isinstance(container, zipfile.ZipFile):
        return container.open(entry.handle)
    stream = container.extractfile(entry.handle)
    if stream is None:
        raise DataError(
            f"entry '{entry.name}' has no data",
            file=str(container.name),
            row=entry.name,
            expected="a regular file",
        )
    return stream


def _iter_files(entries: list[_Entry]) -> Iterator[_Entry]:
    return (e for e in entries if e.kind == "file" and e.name)


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _check_expansion(archive: Path, entries: list[_Entry], dest: Path) -> None:
    """DataError before anything is written when the archive would expand more than any real dataset archive
    does (a decompression bomb) or more than the disk under ``dest`` holds. The declared sizes bind: zip
    and tar readers stop each entry at its declared size."""
    total = sum(e.size for e in _iter_files(entries))
    packed = max(archive.stat().st_size, 1)
    if total > _MAX_EXPANSION * packed:
        raise DataError(
            f"the archive would expand {packed:,} bytes into {total:,} ({total / packed:,.0f} times)",
            file=str(archive),
            expected=f"at most {_MAX_EXPANSION} times (image archives barely "
            "compress); an archive this compressible is a decompression "
            "bomb and was not extracted",
        )
    free = shutil.disk_usage(dest).free
    needed = sum(
        e.size
        for e in _iter_files(entries)  # what an interrupted run left complete is not written again
        if not ((dest / e.name).is_file() and (dest / e.name).stat().st_size == e.size)
    )
    if needed > free:
        raise DataError(
            f"the archive needs {_human(needed)} but {dest} has {_human(free)} free",
            file=str(archive),
            expected="room for the extracted files; nothing was extracted",
        )


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> ExtractResult:
    """Extract a zip or tar archive into ``dest`` safely and resumably.

    Args:
        archive: the archive file.
        dest: the target folder (created).

    Returns:
        Counts of files, link entries left out, and files already complete from an earlier run.

    Raises:
        DataError: when an entry is absolute or contains ``..`` (nothing is written), when a path
            would be written through a link leading outside ``dest``, or when the archive is corrupt.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    marker = dest / f".extracted-{archive.name}.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        logger.info("%s: already extracted (%d files)", archive.name, info.get("files", 0))
        return ExtractResult(info.get("files", 0), info.get("skipped_links", 0), info.get("files", 0))
    entries, container = _entries(archive)  # every name is checked before anything is written
    links = sum(e.kind in ("link", "other") for e in entries)
    files = resumed = 0
    try:
        _check_expansion(archive, entries, dest)
        for entry in entries:
            if entry.kind == "dir" and entry.name:
                _inside(dest / entry.name, root).mkdir(parents=True, exist_ok=True)
        for entry in _iter_files(entries):
            target = _inside(dest / entry.name, root)
            files += 1
            if target.is_file() and target.stat().st_size == entry.size:
                resumed += 1
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            _inside(target.parent, root)  # a link among the parents would have moved it out
            with _open_member(container, entry) as src, atomic_path(target) as tmp, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise DataError(
            f"archive is corrupt or truncated ({type(e).__name__}: {e})",
            file=str(archive),
            expected="a complete archive; delete it and download again",
        ) from e
    finally:
        container.close()
    if links:
        logger.warning(
            "%s: %d link or special entries were not created (links could lead outside %s)",
            archive.name,
            links,
            dest,
        )
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps({"archive": archive.name, "files": files, "skipped_links": links}) + "\n")
    logger.info("%s: extracted %d files into %s (%d already complete)", archive.name, files, dest, resumed)
    return ExtractResult(files, links, resumed)
