"""Caption sources: where they are, what their content is, and reading them.

A source is a local Parquet / CSV / JSONL file or `hf://owner/repo/path[@revision]` in a
Hugging Face *dataset* repo. Two questions are asked of it:

- `source_fingerprint`: has it changed? (cheap; used by the ingest cache key and by the
  refresh flow). Local files: sha256 of the bytes. Hub files: the file's etag and
  commit as the hub reports them (an LFS etag is the content's sha256), or, offline, the
  bytes of the copy huggingface_hub already holds.
- `read_captions`: its normalised captions, with empty and duplicate captions dropped
  and counted, and rows that share an id but not a text handled as the dataset's
  `on_duplicate_id` says (counted and named either way). Every failure is a
  `SourceError` in one line naming the file (and the row or column at fault).

Text files (CSV, JSON lines) are read as UTF-8 with or without a byte-order mark (Excel
and Windows Notepad write one).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tasks.config import DatasetSpec, parse_hub_source
from textme.encoders.hub import offline_reason

__all__ = [
    "SourceError",
    "Captions",
    "SUPPORTED_SUFFIXES",
    "fetch_source",
    "source_fingerprint",
    "read_captions",
    "cached_file_key",
]

SUPPORTED_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json", ".ndjson")


class SourceError(ValueError):
    """A caption source cannot be used; the message names the file and the reason."""


@dataclass
class Captions:
    """One dataset's captions after normalisation and de-duplication (first kept)."""

    dataset: str
    source: str
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    shas: list[str] = field(default_factory=list)
    n_input: int = 0
    n_empty: int = 0
    n_duplicate: int = 0
    #: ids found on several rows with different texts: how many ids, how many rows
    #: `on_duplicate_id: first` dropped, and the first few {id: [rows]} (0-based rows).
    n_duplicate_ids: int = 0
    n_duplicate_id_dropped: int = 0
    duplicate_ids: dict[str, list[int]] = field(default_factory=dict)

    def duplicate_ids_text(self, limit: int = 3) -> str:
        """`'a' (rows 3, 17), 'b' (rows 5, 9)`: the first duplicated ids and their rows."""
        shown = [f"{cid!r} (rows {', '.join(map(str, rows))})" for cid, rows in list(self.duplicate_ids.items())[:limit]]
        more = self.n_duplicate_ids - len(shown)
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "")

    def content_digest(self) -> str:
        """sha256 over (caption_id, text_sha) in order: what the snapshot fingerprint hashes."""
        h = hashlib.sha256()
        for cid, sha in zip(self.ids, self.shas):
            h.update(cid.encode("utf-8"))
            h.update(b"\x00")
            h.update(sha.encode("ascii"))
            h.update(b"\n")
        return h.hexdigest()


# --------------------------------------------------------------------------- locating


def fetch_source(spec: DatasetSpec, *, local_files_only: bool = False) -> Path:
    """A local path for the source (downloads a hub file into huggingface_hub's cache)."""
    if not spec.is_hub:
        path = Path(spec.source)
        if not path.is_file():
            raise SourceError(f"{path}: caption source not found")
        return path
    repo, filename, revision = parse_hub_source(spec.source)
    from huggingface_hub import hf_hub_download

    offline = offline_reason()
    try:
        return Path(
            hf_hub_download(
                repo, filename, repo_type="dataset", revision=revision,
                local_files_only=local_files_only or offline is not None,
            )
        )
    except Exception as exc:  # network, auth, missing file: all one line for the user
        reason = offline or _first_line(exc)
        raise SourceError(
            f"{spec.source}: cannot fetch from the Hugging Face hub ({reason}); "
            "download it and point `source:` at the local file"
        ) from None


def source_fingerprint(spec: DatasetSpec) -> dict[str, Any]:
    """A small JSON-able description that changes exactly when the source content may."""
    if not spec.is_hub:
        path = Path(spec.source)
        if not path.is_file():
            raise SourceError(f"{path}: caption source not found")
        return {"kind": "file", "sha256": cached_file_key(path)}
    repo, filename, revision = parse_hub_source(spec.source)
    if revision and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return {"kind": "hub", "repo": repo, "path": filename, "commit": revision}
    remote = _hub_metadata(repo, filename, revision)
    if remote is not None:
        return {"kind": "hub", "repo": repo, "path": filename, **remote}
    local = fetch_source(spec, local_files_only=True)  # offline: the copy we already hold
    return {"kind": "hub-cached", "repo": repo, "path": filename, "sha256": cached_file_key(local)}


def _hub_metadata(repo: str, filename: str, revision: str | None) -> dict[str, str] | None:
    if offline_reason() is not None:
        return None
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        meta = get_hf_file_metadata(hf_hub_url(repo, filename, repo_type="dataset", revision=revision))
    except Exception:
        return None
    if not meta.etag:
        return None
    return {"etag": meta.etag.strip('"'), "commit": meta.commit_hash or ""}


_FILE_KEYS: dict[tuple[str, int, int], str] = {}


def cached_file_key(path: str | os.PathLike) -> str:
    """storage.fingerprint.file_key, memoised per (path, size, mtime) within a process.

    Cache-key functions and tasks both ask for the same files' keys; hashing each file
    once per process keeps key functions cheap.
    """
    from storage.fingerprint import file_key

    st = os.stat(path)
    memo = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    key = _FILE_KEYS.get(memo)
    if key is None:
        key = file_key(path)
        _FILE_KEYS[memo] = key
    return key


# --------------------------------------------------------------------------- reading


_SHOWN_DUPLICATES = 5  # duplicated ids kept (with their rows) for messages


def read_captions(spec: DatasetSpec, dataset: str) -> Captions:
    """Read, normalise and de-duplicate one dataset's captions (errors name the file).

    Duplicate texts are dropped (first kept). Rows sharing an id with different texts
    follow `spec.on_duplicate_id`: "keep" all of them, keep the "first" row of each id,
    or "fail" with a `SourceError` naming the ids and rows."""
    from storage.fingerprint import normalize_text, text_key

    path = fetch_source(spec)
    shown = spec.source
    raw_ids, raw_texts = _read_columns(path, shown, spec.text_column, spec.id_column)
    out = Captions(dataset=dataset, source=spec.source, n_input=len(raw_texts))
    seen: set[str] = set()
    id_rows: dict[str, list[int]] = {}  # id -> rows kept under it (only with an id column)
    for row, (cid, text) in enumerate(zip(raw_ids, raw_texts)):
        if text is None:
            out.n_empty += 1
            continue
        if not isinstance(text, str):
            raise SourceError(
                f"{shown} row {row}: column {spec.text_column!r} holds a {type(text).__name__}, expected text"
            )
        norm = normalize_text(text)
        if not norm:
            out.n_empty += 1
            continue
        sha = text_key(norm)
        if sha in seen:
            out.n_duplicate += 1
            continue
        caption_id = str(row) if cid is None else str(cid)
        if cid is not None:
            rows = id_rows.setdefault(caption_id, [])
            if rows:  # the same id, another text (the same text was dropped above)
                if len(rows) == 1:
                    out.n_duplicate_ids += 1
                if caption_id in out.duplicate_ids or len(out.duplicate_ids) < _SHOWN_DUPLICATES:
                    out.duplicate_ids.setdefault(caption_id, list(rows)).append(row)
                if spec.on_duplicate_id == "first":
                    out.n_duplicate_id_dropped += 1
                    rows.append(row)
                    continue
            rows.append(row)
        seen.add(sha)
        out.ids.append(caption_id)
        out.texts.append(norm)
        out.shas.append(sha)
    if out.n_duplicate_ids and spec.on_duplicate_id == "fail":
        raise SourceError(
            f"{shown}: {out.n_duplicate_ids} caption id{'s' if out.n_duplicate_ids > 1 else ''} "
            f"in column {spec.id_column!r} with different texts: {out.duplicate_ids_text()}; "
            f"set on_duplicate_id: keep (use every text) or first (each id's first row)"
        )
    if not out.texts:
        what = "no rows" if out.n_input == 0 else f"only empty values in {out.n_input} rows"
        raise SourceError(f"{shown}: caption column {spec.text_column!r} is empty ({what})")
    return out


def _read_columns(
    path: Path, shown: str, text_column: str, id_column: str | None
) -> tuple[list[Any], list[Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        rows = _read_parquet(path, shown, text_column, id_column)
    elif suffix == ".csv":
        rows = _read_csv(path, shown, text_column, id_column)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        rows = _read_jsonl(path, shown, text_column, id_column)
    else:
        raise SourceError(
            f"{shown}: unsupported caption file type {suffix or '(none)'!r} "
            f"(supported: {', '.join(SUPPORTED_SUFFIXES)})"
        )
    return rows


def _missing_column(shown: str, column: str, role: str, columns: list[str]) -> SourceError:
    return SourceError(f"{shown}: no {role} column {column!r} (columns: {', '.join(columns) or 'none'})")


def _read_parquet(path: Path, shown: str, text_column: str, id_column: str | None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as exc:
        raise SourceError(f"{shown}: not a readable Parquet file ({_first_line(exc)})") from None
    columns = list(schema.names)
    if text_column not in columns:
        raise _missing_column(shown, text_column, "caption", columns)
    if id_column is not None and id_column not in columns:
        raise _missing_column(shown, id_column, "id", columns)
    field_type = schema.field(text_column).type
    if not (pa.types.is_string(field_type) or pa.types.is_large_string(field_type) or pa.types.is_null(field_type)):
        raise SourceError(f"{shown}: caption column {text_column!r} has type {field_type}, expected string")
    wanted = [text_column] + ([id_column] if id_column else [])
    table = pq.read_table(path, columns=wanted)
    texts = table.column(text_column).to_pylist()
    ids = table.column(id_column).to_pylist() if id_column else [None] * len(texts)
    return ids, texts


def _read_csv(path: Path, shown: str, text_column: str, id_column: str | None):
    import csv

    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a BOM is not a column name
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            if text_column not in columns:
                raise _missing_column(shown, text_column, "caption", columns)
            if id_column is not None and id_column not in columns:
                raise _missing_column(shown, id_column, "id", columns)
            texts, ids = [], []
            for row in reader:
                texts.append(row.get(text_column))
                ids.append(row.get(id_column) if id_column else None)
    except UnicodeDecodeError:
        raise SourceError(f"{shown}: not UTF-8 text") from None
    except csv.Error as exc:
        raise SourceError(f"{shown}: malformed CSV ({exc})") from None
    return ids, texts


def json_lines(path: Path, shown: str, error: type[Exception]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file (UTF-8, a
    byte-order mark allowed); a line that is not a JSON object raises `error` naming the
    file and the line."""
    with path.open(encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{shown} line {lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise error(f"{shown} line {lineno}: expected a JSON object per line")
            yield lineno, record


def _read_jsonl(path: Path, shown: str, text_column: str, id_column: str | None):
    texts, ids = [], []
    seen_columns: dict[str, None] = {}
    found_text = False
    try:
        for lineno, record in json_lines(path, shown, SourceError):
            for key in record:
                seen_columns.setdefault(key, None)
            found_text = found_text or text_column in record
            texts.append(record.get(text_column))
            if id_column is not None:
                if id_column not in record:
                    raise SourceError(f"{shown} line {lineno}: no id field {id_column!r}")
                ids.append(record[id_column])
            else:
                ids.append(None)
    except UnicodeDecodeError:
        raise SourceError(f"{shown}: not UTF-8 text") from None
    if texts and not found_text:
        raise _missing_column(shown, text_column, "caption", list(seen_columns))
    return ids, texts


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
