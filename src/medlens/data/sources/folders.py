"""Image trees laid out as ``<split>/<class>/<image>`` (Kaggle's pneumonia and OAI knee sets).

Every file found is either an image of a class folder or a rejected record saying why it is not read, so
that a renamed split folder or an unexpected suffix is counted instead of skipped. Junk (``.DS_Store``,
``Thumbs.db``, ``__MACOSX``, hidden names) is metadata that archives add, not data, and is left out.
"""

from __future__ import annotations

import filecmp
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from medlens.data.sources import RawRecord
from medlens.data.sources.readers import files_under, is_junk, normalise_split, unsupported_image

logger = logging.getLogger(__name__)

__all__ = ["SPLITS", "split_of", "unread", "class_folder_images", "copy_not_read", "labels_disagree", "sha1"]

SPLITS = ("train", "val", "test")


def split_of(folder: Path) -> str | None:
    """train/val/test for a split folder (``validation``/``valid`` read as val), else None."""
    split = normalise_split(folder.name) if folder.is_dir() else None
    return split if split in SPLITS else None


def unread(path: Path, base: Path, reason: str, detail: str, modality: str) -> RawRecord:
    """A file of the dataset that is not read, as a rejected record so that it is counted."""
    return RawRecord(
        native_id=path.relative_to(base).as_posix(),
        image=str(path),
        text=None,
        text_source="from_labels",
        modality=modality,
        source_ref=str(path),
        reject=reason,
        reject_detail=detail or str(path),
    )


def class_folder_images(
    tree: Path,
    *,
    kind: str,
    classes: str,
    modality: str,
    ignore: Callable[[Path], bool] = lambda child: False,
) -> Iterator[tuple[str, Path] | RawRecord]:
    """``(split, image path)`` for each image of a class folder of a split folder of ``tree``; a rejected
    record for every other file. Where two folders name one split (``val/`` and ``validation/``) both are
    read, less the files of the second that repeat the first's byte for byte (rejected as copies, so that no
    image is in the split twice).

    Args:
        kind: what a class folder is called in messages (``class``, ``grade``).
        classes: the class folders expected, for messages (``NORMAL|PNEUMONIA``).
        modality: of the rejected records.
        ignore: a top-level entry that is no split folder and is not read on purpose (a copy of the tree).
    """
    first_of: dict[str, Path] = {}  # split -> the first folder read for it
    for child in sorted(c for c in tree.iterdir() if not is_junk(c.name)):
        split = split_of(child)
        if split is not None and first_of.setdefault(split, child) != child:
            logger.warning(
                "%s/ and %s/ are both read as the %s split", first_of[split].name, child.name, split
            )
        if split is None:
            if ignore(child):
                continue
            why = (
                (f"unknown split folder {child.name!r} (expected train/val/test)", "")
                if child.is_dir()
                else (
                    "file outside the split folders",
                    f"expected train/, val/ and test/ holding {kind} folders",
                )
            )
            for path in [child] if child.is_file() else files_under(child):
                yield unread(path, tree, *why, modality)
            continue
        for path in files_under(child):
            if path.parent.parent != child:
                yield unread(
                    path,
                    tree,
                    f"not in a {kind} folder",
                    f"expected {child.name}/<{classes}>/<image>",
                    modality,
                )
            elif bad := unsupported_image(path):
                yield unread(path, tree, *bad, modality)
            elif child != first_of[split] and (
                copy := _same_bytes(path, first_of[split] / path.relative_to(child))
            ):
                yield unread(path, tree, *copy, modality)
            else:
                yield split, path


def _same_bytes(path: Path, twin: Path) -> tuple[str, str] | None:
    """The rejection of ``path`` as a copy when ``twin`` holds the same bytes, else None."""
    try:
        same = path != twin and twin.is_file() and filecmp.cmp(path, twin, shallow=False)
    except OSError as e:  # one file that cannot be read (EIO) must not stop the dataset
        return "copy: cannot be compared", f"{e.strerror or e} comparing it with {twin}"
    return ("copy: same bytes as its counterpart", f"same bytes as {twin}") if same else None


def copy_not_read(
    copy: Path, original: Path, base: Path, modality: str, *, elsewhere: Sequence[Path] = ()
) -> Iterator[RawRecord]:
    """A rejected record for each file of ``copy``, a folder not read because it repeats ``original``
    (OAI's ``auto_test/`` of ``test/``, a zip's nested copy of the whole tree). Each says whether the file
    has the same bytes as its counterpart, other bytes, or none, so that a "copy" holding other data shows
    in rejected.csv instead of being lost unseen (comparing reads both files in full).

    Args:
        base: what native ids are relative to.
        elsewhere: folders inside ``copy`` whose files are read or rejected by someone else (the tree read,
            when the copy holds it; another copy): left out here, so that no file is counted twice.
    """
    inside = [e for e in elsewhere if copy in e.parents]
    for path in files_under(copy):
        if any(e in path.parents for e in inside):
            continue
        twin = original / path.relative_to(copy)
        if not twin.is_file():
            why = (
                "copy: no counterpart",
                f"{copy} is taken as a copy of {original}, which has no {twin.name}",
            )
        elif same := _same_bytes(path, twin):
            why = same
        else:
            why = ("copy: other bytes than its counterpart", f"{twin} has other bytes; {copy} is not read")
        yield unread(path, base, *why, modality)


def sha1(path: Path) -> str | None:
    """The file's SHA-1, or None when it cannot be read (EIO): then it is compared with nothing, and prepare
    rejects it as an unreadable image instead of one file's error stopping the dataset."""
    h = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def labels_disagree(paths: list[Path], tree: Path, label_map) -> dict[Path, str]:
    """path -> why, for the images whose bytes are also in another class folder (``NORMAL`` and ``PNEUMONIA``,
    KL grade 0 and 3): one image has one label, and either copy alone would be a silently wrong one. Each copy
    got its own record with its folder's label, and their synthesised texts differ, so prepare's duplicate
    check let both through. Only files of equal size are hashed."""
    by_size: dict[int, list[Path]] = defaultdict(list)
    for path in paths:
        by_size[path.stat().st_size].append(path)
    by_bytes: dict[str, list[Path]] = defaultdict(list)
    for same_size in by_size.values():
        if len(same_size) > 1:
            for path in same_size:
                by_bytes[sha1(path) or f"unreadable:{path}"].append(path)
    disagree = {}
    for copies in by_bytes.values():
        if len({tuple(label_map.map([p.parent.name])[0]) for p in copies}) > 1:
            where = "; ".join(p.relative_to(tree).as_posix() for p in copies)
            disagree.update(dict.fromkeys(copies, f"the same bytes in several class folders: {where}"))
    return disagree
