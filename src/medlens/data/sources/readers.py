"""Helpers the dataset adapters share: CSV/JSON reading with row-level errors, file lookup, label maps.

Real dataset files break in small ways (a trailing comma in a header, a Latin-1 byte in one row,
a renamed column, a doubled folder from unzipping). These helpers turn each such case into either a
:class:`~medlens.errors.DataError` naming the file and what was expected (the whole file is unusable)
or a per-row problem the adapter passes on as a rejected record (one row is unusable).
"""
# long: the CSV, JSON and table readers every adapter shares, each error naming its file, row and column

from __future__ import annotations

import csv
import difflib
import filecmp
import functools
import gzip
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medlens.config import FINDINGS
from medlens.data.images import IMAGE_SUFFIXES
from medlens.errors import ConfigError, DataError
from medlens.resources import resource_path

__all__ = [
    "CsvRow",
    "CsvTable",
    "conflicting_rows",
    "read_json_file",
    "find_file",
    "index_files",
    "FileIndex",
    "is_junk",
    "IMAGE_SUFFIXES",
    "files_under",
    "unsupported_image",
    "LabelMap",
    "load_label_map",
    "ChexpertValues",
    "chexpert_values",
    "chexpert_columns",
    "normalise_view",
    "is_frontal",
    "normalise_split",
    "frontal_filter",
    "parse_bool",
    "cell_text",
]

logger = logging.getLogger(__name__)

# Folders and files that archives made on macOS or by hand carry along and that are never data.
_JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})
_SURROGATE = re.compile("[\udc80-\udcff]")


def _physical_lines(text: str) -> list[str]:
    """The lines of ``text`` with their endings kept: split at ``\n`` (so ``\r\n`` too), or at ``\r`` in a file
    with no ``\n`` at all (Excel for Mac's CSV). Never at ``\u2028`` or ``\x0c``, which ``str.splitlines`` would
    split a report at. A lone ``\r`` in a file of ``\n`` lines is left to the CSV parser, which refuses it in an
    unquoted field (a rejected record, never a report cut short and kept)."""
    end = "\n" if "\n" in text or "\r" not in text else "\r"
    lines = [line + end for line in text.split(end)]
    lines[-1] = lines[-1][: -len(end)]
    return lines if lines[-1] else lines[:-1]


def is_junk(name: str) -> bool:
    """True for macOS/Windows metadata (``__MACOSX``, ``.DS_Store``, AppleDouble ``._x``) and hidden names."""
    return name in _JUNK_NAMES or name.startswith(".")


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (any depth, sorted), junk left out.

    Junk (``.DS_Store``, ``Thumbs.db``, ``desktop.ini``, AppleDouble ``._x``, ``__MACOSX/`` and other
    hidden names) is metadata that archives and file browsers add and never data, so it is neither
    read nor counted as a rejected record.
    """
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not is_junk(d)]
        found.extend(Path(here) / f for f in files if not is_junk(f))
    return sorted(found)


def unsupported_image(path: Path) -> tuple[str, str] | None:
    """(reason, detail) when ``path``'s suffix is not one :func:`medlens.data.images.load_image` decodes."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return None
    return (
        f"unsupported image suffix {path.suffix.lower() or '(none)'}",
        f"{path.name}; expected one of {', '.join(sorted(IMAGE_SUFFIXES))}",
    )


def _read_text(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 survive as lone surrogates so the row holding them is found."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError as e:
        raise DataError("file not found", file=str(path), expected="an existing file") from e
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(
            f"cannot be read ({type(e).__name__}: {e})",
            file=str(path),
            expected="a readable (optionally gzipped) text file",
        ) from e
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return raw.decode("utf-8", errors="surrogateescape")


@dataclass
class CsvRow:
    """One data row: its first line number in the file, the values by column, and what is wrong with it."""

    line: int
    values: dict[str, str]
    problem: str | None = None  # set when the row cannot be used (bad bytes, wrong field count)
    detail: str = ""
    raw: str = ""  # a record the parser refused: its first physical line, so a caller can name its key

    def get(self, column: str | None, default: str = "") -> str:
        return self.values.get(column, default) if column else default


@dataclass
class CsvTable:
    """A CSV file whose header has been checked; iterate it for :class:`CsvRow` objects.

    Args:
        path: the file (``.csv`` or ``.csv.gz``).
        required: columns that must exist; a tuple lists accepted spellings of one column
            (e.g. ``("Patient Gender", "Patient Sex")``).

    Raises:
        DataError: when the file cannot be read, has no header, or lacks a required column.
    """

    path: Path
    required: Sequence[str | tuple[str, ...]] = ()
    columns: list[str] = field(init=False)
    _text: str = field(init=False, repr=False)
    _lines: list[str] = field(init=False, repr=False)
    _resolved: dict[str | tuple[str, ...], str] = field(init=False, repr=False)
    _header_lines: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._text = _read_text(self.path)
        # the header and the body are split into lines the same way, so line numbers agree
        self._lines = _physical_lines(self._text)
        reader = csv.reader(iter(self._lines))
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise DataError(
                f"the header cannot be parsed ({e})", file=str(self.path), row=1, expected="a CSV header row"
            ) from e
        self._header_lines = reader.line_num
        if not header or not any(h.strip() for h in header):
            raise DataError(
                "the file is empty or has no header row",
                file=str(self.path),
                expected="a CSV header with the columns " + self._describe(self.required),
            )
        if _SURROGATE.search(",".join(header)):
            raise DataError(
                "the header holds bytes that are not UTF-8",
                file=str(self.path),
                row=1,
                expected="a UTF-8 encoded CSV file",
            )
        # NIH and other exports end every line with a comma: an unnamed empty last column
        while header and not header[-1].strip():
            header.pop()
        self.columns = [h.strip() for h in header]
        repeated = sorted({c for c in self.columns if c and self.columns.count(c) > 1})
        if repeated:  # which of the two columns a value came from would be a silent choice
            raise DataError(
                f"the header repeats the column '{repeated[0]}' (columns "
                f"{', '.join(str(i + 1) for i, c in enumerate(self.columns) if c == repeated[0])})",
                file=str(self.path),
                row=1,
                expected="each column named once",
            )
        self._resolved = {}
        for spec in self.required:
            self._resolved[spec] = self._resolve(spec, required=True)

    @staticmethod
    def _describe(specs: Iterable[str | tuple[str, ...]]) -> str:
        return ", ".join(
            " or ".join(f"'{s}'" for s in spec) if isinstance(spec, tuple) else f"'{spec}'" for spec in specs
        )

    def _resolve(self, spec: str | tuple[str, ...], *, required: bool) -> str | None:
        names = spec if isinstance(spec, tuple) else (spec,)
        for name in names:
            if name in self.columns:
                return name
        if not required:
            return None
        close = difflib.get_close_matches(names[0], self.columns, n=1, cutoff=0.6)
        hint = f" (found '{close[0]}': renamed?)" if close else ""
        # one header cell holding the names: the file separates its fields with something else than commas
        if len(self.columns) == 1 and (
            sep := next((s for s in (";", "\t", "|") if s in self.columns[0]), None)
        ):
            hint = f" (the header is one field: the file is separated by {sep!r}, not commas; save it as CSV)"
        raise DataError(
            f"missing column {self._describe([spec])}{hint}",
            file=str(self.path),
            row=1,
            expected=f"the columns {self._describe(self.required)}; "
            f"the header has {', '.join(repr(c) for c in self.columns)}",
        )

    def column(self, spec: str | tuple[str, ...]) -> str | None:
        """The header name used for ``spec`` (one of its spellings), or None when the file lacks it."""
        if spec not in self._resolved:
            self._resolved[spec] = self._resolve(spec, required=False)
        return self._resolved[spec]

    def ref(self, line: int) -> str:
        return f"{self.path}:{line}"

    def __iter__(self) -> Iterator[CsvRow]:
        """Every record after the header, each with the line it starts on.

        The csv module alone loses records silently or dies on them: a quote never closed swallows every
        following line into one field, and a field over its size limit raises for the whole file. Records
        are parsed strictly (a quoted field must close before a delimiter or the end of a line), and one
        the parser refuses becomes a row problem on its first line; reading resumes on the next line, so
        that every record is either kept or rejected.
        """
        lines = self._lines  # LF, CRLF and CR-only (Excel for Mac) endings, even mixed in one file
        n = len(self.columns)
        pos = self._header_lines
        while pos is not None and pos < len(lines):
            pos = yield from self._records(lines, pos, n)

    def _records(self, lines: list[str], pos: int, n: int) -> Iterator[CsvRow]:
        """Records from line index ``pos`` on; returns the index to resume from after a bad record, else None."""
        reader = csv.reader(iter(lines[pos:]), strict=True)
        start = pos + 1  # 1-based line of the next record
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return None
            except csv.Error as e:
                yield CsvRow(
                    start,
                    {},
                    "malformed record",
                    _csv_problem(str(e), pos + reader.line_num),
                    raw=lines[start - 1].rstrip("\r\n"),
                )
                return start  # resume on the line after this record's first
            line, start = start, pos + reader.line_num + 1
            if not any(f.strip() for f in fields):
                continue  # a blank line, or a spreadsheet's row of bare commas, is not a record
            while len(fields) > n and not fields[-1].strip():
                fields.pop()  # trailing commas
            values = dict(zip(self.columns, (f.strip() for f in fields), strict=False))
            row = CsvRow(line, values)
            if len(fields) != n:
                row.problem = "malformed row"
                row.detail = f"{len(fields)} fields; the header has {n}"
            elif any(_SURROGATE.search(f) for f in fields):
                row.problem = "non-UTF-8 bytes in row"
                bad = next(f for f in fields if _SURROGATE.search(f))
                row.detail = repr(bad.encode("utf-8", errors="surrogateescape"))[:120]
            yield row


def conflicting_rows(table: CsvTable, key: str) -> dict[str, str]:
    """``{id: detail}`` for the ids in column ``key`` that are on several rows with different values.

    The first row would be kept and the later ones rejected as duplicate ids, so a repeated image with other
    labels kept whichever came first; callers reject every row of such an id instead. Identical repeats are
    left out (one row read twice: prepare keeps the first and counts the rest as duplicate ids).
    """
    rows: dict[str, list[tuple[int, tuple]]] = {}
    for row in table:
        if row.values.get(key):
            rows.setdefault(row.values[key], []).append((row.line, tuple(row.values.items())))
    return {
        k: f"{key} {k} is on lines {', '.join(str(line) for line, _ in same)} with different values"
        for k, same in rows.items()
        if len({values for _, values in same}) > 1
    }


def _csv_problem(message: str, line: int) -> str:
    """What the csv module's complaint means for the record it was reading."""
    if "unexpected end of data" in message:
        return "a quote opened in this record is never closed (it would swallow every line to the end of the file)"
    if "expected after" in message:
        return f"a quoted field does not end at a delimiter (line {line}); a quote inside it is not doubled"
    if "new-line character seen in unquoted field" in message:
        return "a carriage return inside an unquoted field (line endings mixed in one file?); quote the field"
    return f"the CSV parser refused it ({message})"


def read_json_file(path: Path) -> object:
    """Parse a JSON file.

    Raises:
        DataError: naming the file, line and column of a syntax error, or the bad bytes.
    """
    text = _read_text(Path(path))
    if _SURROGATE.search(text):
        offset = _SURROGATE.search(text).start()
        raise DataError(
            "bytes that are not UTF-8",
            file=str(path),
            row=text.count("\n", 0, offset) + 1,
            expected="UTF-8 encoded JSON",
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(
            f"not valid JSON ({e.msg} at column {e.colno})",
            file=str(path),
            row=e.lineno,
            expected="a JSON document",
        ) from e
    except (ValueError, RecursionError) as e:  # an integer over Python's 4300 digits; nesting past the stack
        raise DataError(
            f"cannot be parsed ({type(e).__name__}: {str(e)[:120]})",
            file=str(path),
            expected="a JSON document of records",
        ) from e


def _walk(root: Path, max_depth: int) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk (top-down, sorted) that skips junk folders and files and stops ``max_depth`` levels down."""
    root = Path(root)
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        if len(here.parts) - base >= max_depth:
            dirnames[:] = []
        yield here, dirnames, sorted(f for f in filenames if not is_junk(f))


def find_file(root: Path, names: Sequence[str], *, max_depth: int = 3, what: str = "") -> Path:
    """The shallowest file under ``root`` named one of ``names`` (earlier names win at equal depth).

    Raises:
        DataError: when none exists, naming the folder and the accepted names.
    """
    found: list[tuple[int, int, str, Path]] = []
    for here, _, files in _walk(root, max_depth):
        for f in files:
            if f in names:
                found.append((len(here.parts), names.index(f), str(here), here / f))
    if not found:
        raise DataError(
            f"{what or 'required file'} not found",
            file=str(root),
            expected=f"a file named {' or '.join(repr(n) for n in names)} within {max_depth} folder levels",
        )
    return min(found)[3]


def _same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes; False when either cannot be read (which one a row means is then
    unknown too), so one file's OSError rejects its row instead of stopping the dataset."""
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


class FileIndex(dict):
    """basename -> path, plus ``differing``: the names held by several files whose bytes differ."""

    differing: dict[str, list[Path]]

    def warn_unlisted(self, listed: Iterable[str], table: Path) -> None:
        """Warn with the count and first names of the indexed files no row of ``table`` names: images the
        label file does not describe are not records, but they are said, not lost unseen."""
        if unlisted := sorted(set(self) - set(listed)):
            logger.warning(
                "%d images are in no row of %s and are not read (%s)",
                len(unlisted),
                table,
                ", ".join(unlisted[:3]) + (", ..." if len(unlisted) > 3 else ""),
            )

    def ambiguous(self, name: str) -> tuple[str, str] | None:
        """(reason, detail) when several different files carry ``name``, else None."""
        if name not in self.differing:
            return None
        return "several different files with this name", "; ".join(str(p) for p in self.differing[name])


def index_files(root: Path, suffixes: Sequence[str], *, max_depth: int = 8) -> FileIndex:
    """Map basename -> path for files with one of ``suffixes`` (lower case) under ``root``.

    Kaggle's NIH layout spreads images over ``images_0XX/images/`` and PAD-UFES-20 over doubled
    ``imgs_part_N`` folders, so adapters look images up by name. When a name occurs twice the
    shallower path wins and the count of such duplicates is logged. Copies with other bytes are listed in
    ``differing``: which of them a row means is unknown, and taking the shallower one would pair the row
    with some other image silently.
    """
    found: dict[str, list[tuple[int, str, Path]]] = {}
    for here, _, files in _walk(root, max_depth):
        depth = len(here.parts)
        for f in files:
            if os.path.splitext(f)[1].lower() in suffixes:
                found.setdefault(f, []).append((depth, str(here), here / f))
    index = FileIndex({name: min(copies)[2] for name, copies in found.items()})
    index.differing = {}
    duplicates = 0
    for name, copies in found.items():
        if len(copies) > 1:
            duplicates += len(copies) - 1
            paths = [p for *_, p in sorted(copies)]
            if any(not _same_bytes(paths[0], p) for p in paths[1:]):
                index.differing[name] = paths
    if duplicates:
        logger.info(
            "%s: %d image names occur more than once; the shallowest copy is used (%d names with copies that "
            "differ, their rows rejected)",
            root,
            duplicates,
            len(index.differing),
        )
    return index


# --------------------------------------------------------------------------------------------
# label vocabularies


@dataclass(frozen=True)
class LabelMap:
    """A source's native label names -> labels of one common vocabulary (``resources/label_maps``)."""

    name: str
    vocabulary: str
    targets: tuple[str, ...]
    mapping: Mapping[str, tuple[str, ...]]
    case_insensitive: bool = False
    open_vocabulary: bool = False  # unknown names are kept as native labels instead of rejecting the row

    def lookup(self, native: str) -> tuple[str, ...] | None:
        """Common labels for one native name; None when the name is not in the map."""
        key = native.strip()
        return self.mapping.get(key.casefold() if self.case_insensitive else key)

    def map(self, natives: Iterable[str]) -> tuple[list[str], list[str]]:
        """(common labels, unknown native names) for a record's native labels."""
        labels: list[str] = []
        unknown: list[str] = []
        for native in natives:
            found = self.lookup(native)
            if found is None:
                unknown.append(native)
            else:
                labels.extend(x for x in found if x not in labels)
        return labels, unknown


@functools.cache
def load_label_map(name: str) -> LabelMap:
    """Read ``resources/label_maps/<name>.yaml`` and check every target is in its vocabulary.

    Raises:
        ConfigError: when the file is malformed or maps to a label outside the vocabulary.
    """
    path = resource_path("label_maps", f"{name}.yaml")
    data = yaml.safe_load(path.read_text()) or {}
    vocabulary = data.get("vocabulary")
    targets = tuple(FINDINGS) if vocabulary == "chexpert14" else tuple(data.get("targets") or ())
    if not targets:
        raise ConfigError(
            "no target vocabulary",
            file=str(path),
            key="vocabulary",
            expected="'chexpert14' or a `targets:` list",
        )
    case_insensitive = bool(data.get("case_insensitive", False))
    mapping: dict[str, tuple[str, ...]] = {}
    for native, common in (data.get("labels") or {}).items():
        common = [common] if isinstance(common, str) else list(common or [])
        bad = [c for c in common if c not in targets]
        if bad:
            raise ConfigError(
                f"'{native}' maps to unknown label '{bad[0]}'",
                file=str(path),
                key=f"labels.{native}",
                expected=f"labels of {vocabulary or 'targets'}",
            )
        key = str(native).strip()
        mapping[key.casefold() if case_insensitive else key] = tuple(common)
    return LabelMap(
        name,
        str(vocabulary or name),
        targets,
        mapping,
        case_insensitive,
        bool(data.get("open_vocabulary", False)),
    )


@dataclass
class ChexpertValues:
    """A CheXpert-coded row split by meaning (1.0 positive, 0.0 negative, -1.0 uncertain, blank unmentioned)."""

    labels: list[str]  # positives after the uncertainty policy
    negative: list[str]
    uncertain: list[str]
    invalid: list[tuple[str, str]]  # (column, value) pairs that are none of the four codes


def chexpert_columns(table: CsvTable, label_map: LabelMap) -> dict[str, str]:
    """CheXpert finding -> its column in ``table`` (CheXpert's train/valid.csv, MIMIC's chexpert/negbio CSVs),
    selected by name through ``label_map`` (``chexpert_columns``).

    Raises:
        DataError: when one of the 14 findings has no column. Read without it, every image of the file would be
            silently negative for that finding (a column renamed ``Edemaa`` or ``cardiomegaly``, or deleted).
    """
    columns = {f: c for c in table.columns if (m := label_map.lookup(c)) for f in m}
    missing = [f for f in FINDINGS if f not in columns]
    if missing:
        others = [c for c in table.columns if label_map.lookup(c) is None]
        close = difflib.get_close_matches(missing[0], others, n=1, cutoff=0.6)
        close = close or [c for c in others if c.casefold() == missing[0].casefold()]
        raise DataError(
            "no CheXpert label columns"
            if len(missing) == len(FINDINGS)
            else f"missing label column{'s' * (len(missing) > 1)} {', '.join(repr(f) for f in missing)}"
            + (f" (found '{close[0]}': renamed?)" if close else ""),
            file=str(table.path),
            row=1,
            expected=f"a column for each of the 14 CheXpert findings, named {', '.join(FINDINGS)}",
        )
    return columns


def chexpert_values(values: Mapping[str, str], columns: Mapping[str, str], policy: str) -> ChexpertValues:
    """Decode the 14 CheXpert columns of one row (columns are selected by name, never by position).

    Args:
        values: the row, by column name.
        columns: CheXpert finding name -> column name in this file.
        policy: ``zeros`` (uncertain counts as negative), ``ones`` (as positive) or ``ignore``
            (neither; consumers mask ``meta["uncertain"]``).
    """
    positive, negative, uncertain, invalid = [], [], [], []
    for finding in FINDINGS:
        col = columns.get(finding)
        raw = values.get(col, "").strip() if col else ""
        if not raw:
            continue
        try:
            code = float(raw)
        except ValueError:
            code = None
        if code == 1.0:
            positive.append(finding)
        elif code == 0.0:
            negative.append(finding)
        elif code == -1.0:
            uncertain.append(finding)
        else:
            invalid.append((col, raw))
    labels = [f for f in FINDINGS if f in positive or (policy == "ones" and f in uncertain)]
    return ChexpertValues(labels, negative, uncertain, invalid)


# --------------------------------------------------------------------------------------------
# small normalisations


_VIEW_ALIASES = {
    "L": "LATERAL",
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
    "FRONTAL": "FRONTAL",
    "POSTERO-ANTERIOR": "PA",
    "ANTERO-POSTERIOR": "AP",
}


def normalise_view(view: str | None) -> str | None:
    """Upper-case view code; ``L``/``Lateral`` -> ``LATERAL``, ``Frontal`` -> ``FRONTAL``; blank -> None."""
    if view is None or not str(view).strip():
        return None
    v = " ".join(str(view).split()).upper()
    return _VIEW_ALIASES.get(v, v)


def is_frontal(view: str | None) -> bool:
    """PA, AP and their variants (``AP AXIAL``, ``PA LLD``, ``AP Supine``) or a generic frontal projection."""
    return view is not None and (view == "FRONTAL" or view.split()[0] in ("PA", "AP"))


def frontal_filter(frontal_only: bool, view: str | None, frontal: bool | None = None) -> str | None:
    """The rejection reason when ``frontal_only`` excludes this view, else None."""
    if not frontal_only:
        return None
    if frontal if frontal is not None else is_frontal(view):
        return None
    return f"filtered: view {view or 'unknown'} is not frontal (frontal_only)"


_SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def normalise_split(name: str | None) -> str | None:
    """``validate``/``valid``/``validation`` -> ``val`` (MIMIC, CheXpert, SLAKE); unknown names pass through."""
    if name is None or not str(name).strip():
        return None
    return _SPLITS.get(str(name).strip().lower(), str(name).strip())


# what pandas and spreadsheet exports write for an empty cell (``df.astype(str)`` turns NaN into "nan")
_EMPTY_CELLS = frozenset({"nan", "none", "null", "n/a", "na", "<na>"})


def cell_text(value: str | None) -> str:
    """``value`` stripped, or ``""`` when it is what an export writes for an empty cell (``nan``, ``None``,
    ``N/A``), so that such a cell is missing instead of words in a report or a synthesised text."""
    v = (value or "").strip()
    return "" if v.lower() in _EMPTY_CELLS else v


def parse_bool(value: str) -> bool | str | None:
    """``True``/``FALSE``/``true`` -> bool, ``UNK`` -> ``"unknown"``, blank or ``nan`` -> None; anything else
    unchanged."""
    v = cell_text(value)
    if not v:
        return None
    low = v.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    if low in ("unk", "unknown"):
        return "unknown"
    return v
