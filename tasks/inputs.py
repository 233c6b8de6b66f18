"""Inputs the stages read besides captions: modal item folders and evaluation manifests.

Both are files named in the config, so both are read here with errors that name the
file and line, and both are fingerprinted by content (sha256 of every file involved),
which is what the evaluate and offsets cache keys hash.

Evaluation manifests are JSONL, one row per line (docs/CONFIG.md):

    retrieval       {"item": path, "captions": [str, ...]}
    classification  {"item": path, "label": str}
    emergent        {"source_item": path, "target_item": path}
    mixed_search    {"kind": "doc", "doc_id": str, "text": str|null, "item": path|null}
                    {"kind": "query", "query": str, "relevance": {doc_id: grade, ...}}

Item paths are relative to the manifest's folder, or absolute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import EvalSpec
from tasks.sources import cached_file_key, json_lines

__all__ = [
    "InputError",
    "ItemSample",
    "list_items",
    "sample_items",
    "EvalInputs",
    "read_eval_manifest",
    "eval_inputs_fingerprint",
]


class InputError(ValueError):
    """A modal item folder or evaluation manifest cannot be used (one line, names the file)."""


# --------------------------------------------------------------------------- modal items


@dataclass(frozen=True)
class ItemSample:
    paths: tuple[str, ...]
    keys: tuple[str, ...]  # storage.fingerprint.file_key of each path
    n_available: int

    @property
    def fingerprint(self) -> str:
        from storage.fingerprint import fingerprint

        return fingerprint({"items": list(self.keys)})


def list_items(folder: str | os.PathLike) -> list[str]:
    """Every non-hidden file under `folder`, sorted by relative path (stable everywhere)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: modal items folder not found")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                found.append(Path(dirpath, name))
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    if not found:
        raise InputError(f"{root}: modal items folder is empty")
    return [str(p) for p in found]


def sample_items(folder: str | os.PathLike | None, n: int, seed: int) -> ItemSample:
    """`n` items of a folder, chosen with `seed` and kept in listing order (all if fewer)."""
    if folder is None:
        raise InputError("dataset has no 'items' folder")
    paths = list_items(folder)
    if len(paths) > n:
        idx = np.sort(np.random.default_rng(seed).choice(len(paths), size=n, replace=False))
        chosen = [paths[i] for i in idx]
    else:
        chosen = paths
    return ItemSample(tuple(chosen), tuple(cached_file_key(p) for p in chosen), len(paths))


# --------------------------------------------------------------------------- eval manifests


@dataclass
class EvalInputs:
    """A parsed evaluation manifest; the fields used depend on the task."""

    task: str
    manifest: str
    items: list[str] = field(default_factory=list)  # retrieval / classification / mixed docs
    captions: list[str] = field(default_factory=list)  # retrieval: every caption, grouped
    query_item: list[int] = field(default_factory=list)  # retrieval: item index per caption
    labels: list[str] = field(default_factory=list)  # classification: label per item
    source_items: list[str] = field(default_factory=list)  # emergent
    target_items: list[str] = field(default_factory=list)  # emergent
    docs: list[dict[str, Any]] = field(default_factory=list)  # mixed: doc_id, text, item
    queries: list[dict[str, Any]] = field(default_factory=list)  # mixed: query, relevance

    def all_item_paths(self) -> list[str]:
        doc_items = [d["item"] for d in self.docs if d["item"]]
        return self.items + self.source_items + self.target_items + doc_items


def read_eval_manifest(spec: EvalSpec) -> EvalInputs:
    path = Path(spec.manifest)
    if not path.is_file():
        raise InputError(f"{path}: evaluation manifest not found (evaluation {spec.name!r})")
    out = EvalInputs(task=spec.task, manifest=str(path))
    base = path.parent
    try:
        for lineno, row in json_lines(path, str(path), InputError):
            _PARSERS[spec.task](out, row, base, f"{path} line {lineno}")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    _check_nonempty(out, path)
    return out


def _item(row: dict, key: str, base: Path, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise InputError(f"{where}: field {key!r} must be a file path")
    p = Path(value)
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise InputError(f"{where}: item file not found: {p}")
    return str(p)


def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: field {key!r} must be a non-empty string")
    return value


def _retrieval(out: EvalInputs, row: dict, base: Path, where: str) -> None:
    item = _item(row, "item", base, where)
    caps = row.get("captions")
    if isinstance(caps, str):
        caps = [caps]
    if not isinstance(caps, list) or not caps or not all(isinstance(c, str) and c.strip() for c in caps):
        raise InputError(f"{where}: field 'captions' must be a non-empty list of strings")
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
            raise InputError(f"{where}: field 'doc_id' must be a non-empty string")
        text = row.get("text")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise InputError(f"{where}: field 'text' must be a non-empty string or null")
        item = _item(row, "item", base, where) if row.get("item") is not None else None
        if text is None and item is None:
            raise InputError(f"{where}: doc {doc_id!r} has neither text nor item")
        out.docs.append({"doc_id": doc_id, "text": text, "item": item})
    elif kind == "query":
        query = _text(row, "query", where)
        rel = row.get("relevance")
        if not isinstance(rel, dict) or not rel or not all(
            isinstance(g, (int, float)) and not isinstance(g, bool) for g in rel.values()
        ):
            raise InputError(f"{where}: field 'relevance' must map doc ids to numeric grades")
        out.queries.append({"query": query, "relevance": {str(k): float(v) for k, v in rel.items()}})
    else:
        raise InputError(f"{where}: field 'kind' must be 'doc' or 'query', got {kind!r}")


_PARSERS = {
    "retrieval": _retrieval,
    "classification": _classification,
    "emergent": _emergent,
    "mixed_search": _mixed,
}


def _check_nonempty(out: EvalInputs, path: Path) -> None:
    if out.task == "mixed_search":
        if not out.docs or not out.queries:
            raise InputError(f"{path}: mixed_search manifest needs both 'doc' and 'query' rows")
        ids = [d["doc_id"] for d in out.docs]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InputError(f"{path}: duplicate doc_id {dup!r}")
        known = set(ids)
        for q in out.queries:
            unknown = [d for d in q["relevance"] if d not in known]
            if unknown:
                raise InputError(f"{path}: query {q['query']!r} grades unknown doc_id {unknown[0]!r}")
    elif not (out.items or out.source_items):
        raise InputError(f"{path}: evaluation manifest has no rows")
    if out.task == "classification" and len(set(out.labels)) < 2:
        raise InputError(f"{path}: classification needs at least two distinct labels")


def eval_inputs_fingerprint(spec: EvalSpec) -> str:
    """Content fingerprint of a manifest and every item file it names."""
    from storage.fingerprint import fingerprint

    inputs = read_eval_manifest(spec)
    return fingerprint(
        {
            "manifest": cached_file_key(inputs.manifest),
            "items": [cached_file_key(p) for p in inputs.all_item_paths()],
        }
    )
