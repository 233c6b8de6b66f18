"""What every benchmark reader needs: finding files, reading tables, checking items.

Every failure is a `BenchmarkError` in one line that names the benchmark, the file it
expected and the field it missed, or, for item files, how many are missing and the
first few names.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Missing item files named in an error, at most.
SHOW_MISSING = 5


class BenchmarkError(ValueError):
    """A benchmark's files are not in the expected layout (one line, names the file)."""


def first_file(bench: str, candidates: Sequence[Path], what: str) -> Path:
    """The first existing file of `candidates`, else an error naming them all."""
    for p in candidates:
        if p.is_file():
            return p
    shown = candidates[0] if len(candidates) == 1 else " or ".join(str(c) for c in candidates)
    raise BenchmarkError(f"{bench}: {shown} not found (expected {what})")


def read_text(bench: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: a leading BOM is not data
    except UnicodeDecodeError:
        raise BenchmarkError(f"{bench}: {path}: not UTF-8 text") from None


def read_csv(bench: str, path: Path, required: Sequence[str], *, delimiter: str = ",") -> list[dict[str, str]]:
    """Rows of a CSV (or TSV) with a header; a missing column names the file and the
    columns found, an empty required cell names the row (1-based, after the header)."""
    text = read_text(bench, path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in required if c not in header]
    if missing:
        found = ", ".join(header) or "no header"
        raise BenchmarkError(f"{bench}: {path}: no column {missing[0]!r} (found: {found})")
    rows = []
    for n, row in enumerate(reader, start=1):
        for c in required:
            value = row.get(c)
            if value is None or not value.strip():
                raise BenchmarkError(f"{bench}: {path} row {n}: empty {c!r}")
        rows.append({k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()})
    if not rows:
        raise BenchmarkError(f"{bench}: {path}: no rows")
    return rows


def field(bench: str, record: Any, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """record[key] of the given type, else an error naming `where` and the field."""
    if not isinstance(record, dict) or key not in record:
        raise BenchmarkError(f"{bench}: {where}: no field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BenchmarkError(f"{bench}: {where}: field {key!r} must be a non-empty {want}")
    return value


def find_items(
    bench: str,
    root: Path,
    folders: Sequence[str],
    names: Sequence[Sequence[str]],
    what: str,
) -> list[str]:
    """The file of each item: for item i the first existing `<root>/<folder>/<name>` over
    `folders` (in order) and the candidate names in `names[i]` (in order).

    Missing items are one error: how many, where they were looked for, the first names.
    """
    dirs = [root / f if f else root for f in folders]
    dirs = [d for d in dirs if d.is_dir()] or [root]
    found: list[str] = []
    missing: list[str] = []
    for candidates in names:
        hit = next((d / n for n in candidates for d in dirs if (d / n).is_file()), None)
        if hit is None:
            missing.append(candidates[0])
        else:
            found.append(str(hit))
    if missing:
        looked = ", ".join(str(d) for d in dirs)
        first = ", ".join(missing[:SHOW_MISSING]) + (", ..." if len(missing) > SHOW_MISSING else "")
        raise BenchmarkError(f"{bench}: {len(missing)} of {len(names)} {what} not found (looked in {looked}): {first}")
    return found


# --------------------------------------------------------------------------- restricted pickle


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what pickle makes without looking up a class or function: dicts,
    lists, tuples, strings, numbers. Anything that names a global is refused."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def load_plain_pickle(bench: str, path: Path) -> Any:
    """A pickle holding only plain data (dicts, lists, strings); no code is run."""
    try:
        with path.open("rb") as fh:
            return _PlainUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        raise BenchmarkError(f"{bench}: {path}: {exc} (only dicts, lists and strings are read)") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise BenchmarkError(f"{bench}: {path}: not a readable pickle ({type(exc).__name__})") from None


# --------------------------------------------------------------------------- materialised items


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write an .npy atomically (a crash never leaves a half file under the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)


def need_items_dir(bench: str, items_dir: str | os.PathLike | None) -> Path:
    if items_dir is None:
        raise BenchmarkError(f"{bench}: needs a folder to write its point clouds into (items_dir; "
                             "`textme manifest ... --items-dir DIR`)")
    return Path(items_dir)
