"""The evaluation manifest: one JSON object per line, one row format per task.

    retrieval       {"item": path, "captions": [str, ...]}
    classification  {"item": path, "label": str}
    emergent        {"source_item": path, "target_item": path}
    mixed_search    {"kind": "doc", "doc_id": str, "text": str|null, "item": path|null}
                    {"kind": "query", "query": str, "relevance": {doc_id: grade, ...}}

A query's relevance may be empty (nothing judged relevant: NDCG leaves it out with
ideal="all" and scores it 0 with ideal="retrieved", as GR-CLIP does). Item paths are relative to the manifest's folder, or absolute. This module is the one
definition of the format: benchmark readers (`textme.data.benchmarks`) produce these
rows, `write_manifest` writes them, `read_manifest` / `parse_rows` check them and
gather them into `EvalInputs`, which the pipeline's evaluate stage reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TASKS",
    "ManifestError",
    "EvalInputs",
    "parse_rows",
    "read_manifest",
    "write_manifest",
    "json_lines",
]

TASKS = ("retrieval", "classification", "emergent", "mixed_search")


class ManifestError(ValueError):
    """A manifest row that cannot be used; one line naming the file, line and field."""


@dataclass
class EvalInputs:
    """Parsed evaluation rows; the fields used depend on the task."""

    task: str
    manifest: str  # the manifest file, or "benchmark:<name>[:<split>]"
    items: list[str] = field(default_factory=list)  # retrieval / classification
    captions: list[str] = field(default_factory=list)  # retrieval: every caption, grouped
    query_item: list[int] = field(default_factory=list)  # retrieval: item index per caption
    labels: list[str] = field(default_factory=list)  # classification: label per item
    source_items: list[str] = field(default_factory=list)  # emergent
    target_items: list[str] = field(default_factory=list)  # emergent
    docs: list[dict[str, Any]] = field(default_factory=list)  # mixed: doc_id, text, item
    queries: list[dict[str, Any]] = field(default_factory=list)  # mixed: query, relevance
    dataset: str = ""  # results' `dataset` column: the manifest's stem, or the benchmark
    source_fp: str = ""  # content fingerprint of the rows' source (set by the pipeline)

    def all_item_paths(self) -> list[str]:
        doc_items = [d["item"] for d in self.docs if d["item"]]
        return self.items + self.source_items + self.target_items + doc_items


def json_lines(path: Path, shown: str, error: type[Exception]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines file; a line that
    is not a JSON object raises `error` naming the file and the line."""
    with path.open(encoding="utf-8-sig") as fh:  # -sig: a leading BOM (Windows editors) is not JSON
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


def read_manifest(path: str | os.PathLike, task: str, *, name: str | None = None) -> EvalInputs:
    """Read and check a manifest file for `task` (errors name the file and line)."""
    p = Path(path)
    if task not in TASKS:
        raise ManifestError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if not p.is_file():
        where = f" (evaluation {name!r})" if name else ""
        raise ManifestError(f"{p}: evaluation manifest not found{where}")
    try:
        return parse_rows(json_lines(p, str(p), ManifestError), task, base=p.parent, source=str(p),
                          shown=str(p), dataset=p.stem)
    except UnicodeDecodeError:
        raise ManifestError(f"{p}: not UTF-8 text") from None


def parse_rows(
    rows: Iterable[tuple[int, dict[str, Any]]] | Iterable[dict[str, Any]],
    task: str,
    *,
    base: str | os.PathLike,
    source: str,
    shown: str | None = None,
    dataset: str = "",
) -> EvalInputs:
    """Check rows ((line, row) pairs or plain rows, numbered from 1) and gather them.

    base: the folder relative item paths are taken from; source: what EvalInputs.manifest
    says; shown: how errors name the rows' origin (default `source`).
    """
    if task not in TASKS:
        raise ManifestError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    shown = shown or source
    out = EvalInputs(task=task, manifest=source, dataset=dataset)
    base = Path(base)
    for n, entry in enumerate(rows, start=1):
        lineno, row = entry if isinstance(entry, tuple) else (n, entry)
        if not isinstance(row, dict):
            raise ManifestError(f"{shown} line {lineno}: expected a JSON object per line")
        _PARSERS[task](out, row, base, f"{shown} line {lineno}")
    _check_whole(out, shown)
    return out


def write_manifest(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> int:
    """Write rows as a manifest (UTF-8 JSON lines), atomically; returns the row count."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return n


# --------------------------------------------------------------------------- per task


def _item(row: dict, key: str, base: Path, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: field {key!r} must be a file path")
    p = Path(value)
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise ManifestError(f"{where}: item file not found: {p}")
    return str(p)


def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: field {key!r} must be a non-empty string")
    return value


def _retrieval(out: EvalInputs, row: dict, base: Path, where: str) -> None:
    item = _item(row, "item", base, where)
    caps = row.get("captions")
    if isinstance(caps, str):
        caps = [caps]
    if not isinstance(caps, list) or not caps or not all(isinstance(c, str) and c.strip() for c in caps):
        raise ManifestError(f"{where}: field 'captions' must be a non-empty list of strings")
    out.query_item.extend([len(out.items)] * len(caps))
    out.items.append(item)
    out.captions.extend(caps)


def _classification(out: EvalInputs, row: dict, base: Path, where: str) -> None:
    out.items.append(_item(row, "item", base, where))
    out.labels.append(_text(row, "label", where))


def _emergent(out: EvalInputs, row: dict, base: Path, where: str) -> None:
    out.source_items.append(_item(row, "source_item", base, where))
    out.target_items.append(_item(row, "target_item", base, where))


def _mixed(out: EvalInputs, row: dict, base: Path, where: str) -> None:
    kind = row.get("kind")
    if kind == "doc":
        doc_id = row.get("doc_id")
        if not isinstance(doc_id, str) or not doc_id:
            raise ManifestError(f"{where}: field 'doc_id' must be a non-empty string")
        text = row.get("text")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise ManifestError(f"{where}: field 'text' must be a non-empty string or null")
        item = _item(row, "item", base, where) if row.get("item") is not None else None
        if text is None and item is None:
            raise ManifestError(f"{where}: doc {doc_id!r} has neither text nor item")
        out.docs.append({"doc_id": doc_id, "text": text, "item": item})
    elif kind == "query":
        query = _text(row, "query", where)
        rel = row.get("relevance")
        if not isinstance(rel, dict) or not all(
            isinstance(g, (int, float)) and not isinstance(g, bool) for g in rel.values()
        ):
            raise ManifestError(f"{where}: field 'relevance' must map doc ids to numeric grades")
        out.queries.append({"query": query, "relevance": {str(k): float(v) for k, v in rel.items()}})
    else:
        raise ManifestError(f"{where}: field 'kind' must be 'doc' or 'query', got {kind!r}")


_PARSERS = {
    "retrieval": _retrieval,
    "classification": _classification,
    "emergent": _emergent,
    "mixed_search": _mixed,
}


def _check_whole(out: EvalInputs, shown: str) -> None:
    if out.task == "mixed_search":
        if not out.docs or not out.queries:
            raise ManifestError(f"{shown}: mixed_search manifest needs both 'doc' and 'query' rows")
        ids = [d["doc_id"] for d in out.docs]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))
            raise ManifestError(f"{shown}: duplicate doc_id {dup!r}")
        known = set(ids)
        for q in out.queries:
            unknown = [d for d in q["relevance"] if d not in known]
            if unknown:
                raise ManifestError(f"{shown}: query {q['query']!r} grades unknown doc_id {unknown[0]!r}")
    elif not (out.items or out.source_items):
        raise ManifestError(f"{shown}: evaluation manifest has no rows")
    if out.task == "classification" and len(set(out.labels)) < 2:
        raise ManifestError(f"{shown}: classification needs at least two distinct labels")
