"""Inputs of the ``medlens`` command: which images, and how each becomes the pixels the model trained on.

Training never sees a source file: ``prepare_datasets`` decodes it (grey for X-rays), shrinks it to
the dataset's ``store_size`` and stores PNG/JPEG bytes, and training decodes those bytes as RGB.
:func:`model_input` repeats exactly that, through the same :func:`medlens.data.images.prepare_image`,
with the modality and store size read from the experiment the model came from
(:func:`resolve_preprocessing`). A file that cannot be read becomes a :class:`Failure` naming it, and
the other files are still processed.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from medlens import layout
from medlens.data.images import IMAGE_SUFFIXES, encode_image, load_image, prepare_image
from medlens.errors import ConfigError, DataError
from medlens.io import read_json

__all__ = [
    "Preprocessing",
    "ImageInput",
    "Failure",
    "resolve_preprocessing",
    "model_input",
    "list_images",
    "load_batches",
    "read_medlens_json",
    "IMAGE_SUFFIXES",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocessing:
    """How the training images were prepared: ``prepare_image(src, modality=..., store_size=...)``."""

    modality: str  # decides grey (X-ray modalities) or RGB decoding
    store_size: int  # longest side of the stored image, in pixels
    source: str  # where the two values were read from, shown to the user

    def as_dict(self) -> dict[str, str | int]:
        return {"modality": self.modality, "store_size": self.store_size, "source": self.source}


@dataclass(frozen=True)
class ImageInput:
    """One image to run the model on."""

    id: str  # the manifest's id, else the path as given (or relative to the folder searched)
    path: Path
    text: str | None = None  # the manifest's text, for text embeddings


@dataclass(frozen=True)
class Failure:
    """An input that could not be used, with the reason (the error message names the file)."""

    id: str
    path: str
    error: str


def resolve_preprocessing(
    model_dir: str | os.PathLike, *, modality: str | None = None, store_size: int | None = None
) -> Preprocessing:
    """The modality and store size of the images a model folder was trained on.

    Read from the folder itself (``medlens.json``'s ``preprocessing``, written when it was trained), so the
    folder works wherever it is copied; a folder written before that record existed is read from its
    ``results/<experiment>/`` tree (``data/pairs.parquet`` and ``results/prepared/<dataset>.parquet``).
    Values passed in take precedence.

    Args:
        model_dir: the encoder or decoder folder.
        modality: overrides the training modality (needed when it trained on several).
        store_size: overrides the store size (needed when its datasets used different ones).

    Returns:
        The preprocessing, with a note saying where it came from.

    Raises:
        ConfigError: when a value cannot be read and was not given (the message says which option sets it).
    """
    if store_size is not None and store_size < 1:
        raise ConfigError(
            f"store size {store_size}", key="--store-size", expected="a positive number of pixels"
        )
    if modality is not None and store_size is not None:
        return Preprocessing(modality, store_size, "given on the command line")
    entries, where = _training_images(Path(model_dir))
    modalities = Counter()
    for e in entries:
        modalities[e["modality"]] += e["rows"]
    if modality is None:
        if len(modalities) != 1:
            raise ConfigError(
                f"the model was trained on several modalities {dict(modalities)}",
                key="--modality",
                expected=f"one of {', '.join(sorted(modalities))}",
            )
        modality = next(iter(modalities))
    elif modality not in modalities:
        logger.warning(
            "--modality %s: the model was trained on %s only", modality, ", ".join(sorted(modalities))
        )
    if store_size is not None:
        return Preprocessing(modality, store_size, f"modality from {where}; store size given")
    chosen = [e for e in entries if e["modality"] == modality] or entries
    unknown = [e["dataset"] for e in chosen if e["store_size"] is None]
    if unknown:
        raise ConfigError(
            f"the store size of dataset '{unknown[0]}' is unknown ({where} does not record it)",
            key="--store-size",
            expected="the dataset's store_size in pixels",
        )
    sizes = {e["dataset"]: e["store_size"] for e in chosen}
    if len(set(sizes.values())) != 1:
        raise ConfigError(
            f"the training datasets were stored at different sizes {sizes}",
            key="--store-size",
            expected=f"one of {sorted(set(sizes.values()))}",
        )
    return Preprocessing(modality, next(iter(sizes.values())), f"{where} (datasets {', '.join(sizes)})")


def recorded_preprocessing(model_dir: str | os.PathLike) -> list[dict[str, Any]] | None:
    """``medlens.json``'s ``preprocessing`` (its training images, per dataset), or None when not recorded.

    Raises:
        DataError: naming the file when the record is not a list of such records (its entries are used as
            they are: a TypeError or KeyError traceback otherwise).
    """
    recorded = read_medlens_json(model_dir).get("preprocessing")
    if recorded and (not isinstance(recorded, list) or not all(map(_a_preprocessing_record, recorded))):
        raise DataError(
            f"preprocessing is {recorded!r}"[:200],
            file=str(Path(model_dir) / "medlens.json"),
            expected="a list of records with dataset, modality (text), store_size and rows (numbers), as "
            "train_* writes it",
        )
    return recorded or None


def _a_preprocessing_record(entry: Any) -> bool:
    """Whether ``entry`` is one dataset's record in ``medlens.json``'s ``preprocessing`` (a store size may be
    unknown: None)."""
    types = {"dataset": str, "modality": str, "store_size": int | None, "rows": int}
    return isinstance(entry, dict) and all(k in entry and isinstance(entry[k], t) for k, t in types.items())


def _training_images(model_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """The folder's record of its training images, else what its ``results/`` tree says, and where it came from."""
    recorded = recorded_preprocessing(model_dir)
    if recorded:
        return recorded, f"{model_dir / 'medlens.json'}"
    from medlens.data.preprocessing import describe_training_images

    pairs = layout.in_experiment(model_dir.parent, layout.PAIRS)
    if not pairs.is_file():
        if not model_dir.is_dir():  # a typo: said so, not that the folder's training images are unknown
            raise ConfigError(
                f"'{model_dir}' is not a model folder ({'a file' if model_dir.exists() else 'it does not exist'})",
                key="--model",
                expected="a model folder, results/<experiment>/<stage>",
            )
        raise ConfigError(
            f"cannot tell how the training images of '{model_dir}' were prepared: its medlens.json records it not, "
            f"and {pairs} is not there",
            key="--modality/--store-size",
            expected="both --modality (e.g. chest_xray) and --store-size (the dataset's store_size, default 320)",
        )
    return describe_training_images(pairs), f"{pairs} and results/prepared/"


def model_input(src, prep: Preprocessing) -> Image.Image:
    """The RGB image training would have seen for ``src``: prepared, stored, and decoded as training decodes.

    The round trip through the stored bytes matters for photographs: they are stored as JPEG, which
    is lossy, so only decoding those bytes gives the exact pixels of training.

    Raises:
        DataError: naming the file when it is missing or cannot be decoded.
    """
    prepared = prepare_image(src, modality=prep.modality, store_size=prep.store_size)
    return load_image(encode_image(prepared), grey=False)


def _walk(folder: Path) -> Iterator[Path]:
    """Every entry under ``folder`` (links to folders not followed, as ``rglob``), or DataError naming a folder
    that cannot be listed: ``rglob`` skips it without a word, and its images would be missing from the output."""

    def refuse(e: OSError) -> None:
        raise DataError(
            f"cannot be listed: {e.strerror}",
            file=str(e.filename),
            expected="folders the command can read (its images would be left out)",
        ) from e

    for root, dirs, files in os.walk(folder, onerror=refuse):
        yield from (Path(root) / name for name in [*dirs, *files])


def list_images(
    source: str | os.PathLike | Sequence[str | os.PathLike], *, with_text: bool = False
) -> list[ImageInput]:
    """The images named by paths, a folder (searched recursively) or a manifest CSV.

    A manifest has a ``path`` column (relative paths are relative to the manifest's folder) and
    optional ``id`` and ``text`` columns. Paths given directly are kept even when they do not exist,
    so that reading them reports the missing file with the others.

    Args:
        source: a list of image paths, a folder, or a ``.csv`` manifest.
        with_text: the caller needs each image's text (a manifest with a ``text`` column).

    Returns:
        The inputs in a stable order (the manifest's, else sorted by path).

    Raises:
        ConfigError: a folder or manifest that does not exist, or text asked of something that has none.
        DataError: a manifest without a ``path`` column, with an empty path, or with a repeated id;
            a folder with no images.
    """
    if not isinstance(source, str | os.PathLike):
        if with_text:
            raise ConfigError(
                "texts were asked for but images were given one by one",
                key="--text",
                expected="a manifest CSV with 'path' and 'text' columns",
            )
        return [ImageInput(str(p), Path(p)) for p in source]
    path = Path(source)
    if path.is_dir():
        if with_text:
            raise ConfigError(
                f"'{path}' is a folder, which has no texts",
                key="--text",
                expected="a manifest CSV with 'path' and 'text' columns",
            )
        files = sorted(p for p in _walk(path) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(
                "no images in this folder",
                file=str(path),
                expected=f"files ending in {', '.join(sorted(IMAGE_SUFFIXES))}",
            )
        return [ImageInput(p.relative_to(path).as_posix(), p) for p in files]
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise ConfigError(
            f"'{path}' is neither a folder nor a manifest file",
            key="--images",
            expected="an existing folder of images or a .csv manifest with a 'path' column",
        )
    return _read_manifest(path, with_text)


def _manifest_items(path: Path, with_text: bool) -> list[ImageInput]:
    # utf-8-sig: spreadsheet programs start a UTF-8 CSV with a byte-order mark, which is not part of the header
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        if "path" not in columns:
            raise DataError(
                f"columns {columns}",
                file=str(path),
                column="path",
                expected="a header with a 'path' column (and optional 'id', 'text')",
            )
        if with_text and "text" not in columns:
            raise DataError(
                f"columns {columns}",
                file=str(path),
                column="text",
                expected="a 'text' column when text embeddings are asked for (--text)",
            )
        items: list[ImageInput] = []
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):  # line 1 is the header
            rel = (row.get("path") or "").strip()
            if not rel:
                raise DataError(
                    "empty path", file=str(path), row=line, column="path", expected="an image path"
                )
            rid = (row.get("id") or "").strip() or rel
            if rid in seen:
                raise DataError(
                    f"id '{rid}' also on line {seen[rid]}",
                    file=str(path),
                    row=line,
                    column="id",
                    expected="unique ids",
                )
            seen[rid] = line
            image = Path(rel) if Path(rel).is_absolute() else path.parent / rel
            items.append(ImageInput(rid, image, row.get("text") if with_text else None))
    return items


def _read_manifest(path: Path, with_text: bool) -> list[ImageInput]:
    try:
        items = _manifest_items(path, with_text)
    except UnicodeDecodeError as e:
        raise DataError(
            f"not UTF-8 text ({e.reason})", file=str(path), expected="a UTF-8 CSV manifest"
        ) from e
    except csv.Error as e:
        raise DataError(f"not a CSV file ({e})", file=str(path), expected="a comma-separated manifest") from e
    if not items:
        raise DataError("the manifest lists no images", file=str(path), expected="one row per image")
    return items


def load_batches(
    items: Sequence[ImageInput], prep: Preprocessing, batch_size: int
) -> Iterator[tuple[list[tuple[ImageInput, Image.Image]], list[Failure]]]:
    """Decode ``items`` batch by batch: ``(loaded, failed)`` per batch of ``batch_size`` inputs.

    Only one batch of images is in memory at a time; a file that cannot be used is a :class:`Failure`
    (also an empty manifest text when texts are needed), never a reason to stop.
    """
    for start in range(0, len(items), batch_size):
        loaded, failed = [], []
        for item in items[start : start + batch_size]:
            try:
                if item.text is not None and not item.text.strip():
                    raise DataError(
                        "empty text", file=str(item.path), column="text", expected="the image's text"
                    )
                loaded.append((item, model_input(item.path, prep)))
            except DataError as e:
                failed.append(Failure(item.id, str(item.path), str(e)))
        yield loaded, failed


def read_medlens_json(model_dir: str | os.PathLike) -> dict:
    """A model folder's ``medlens.json`` (empty for a plain open_clip folder, which has none)."""
    path = Path(model_dir) / "medlens.json"
    if not path.is_file():
        return {}
    return read_json(path, expected="the JSON object train_* wrote")
