"""Inputs the stages read besides captions: modal item folders and evaluation inputs.

Both are files named in the config, so both are read here with errors that name the
file and line, and both are fingerprinted by content (sha256 of every file involved),
which is what the evaluate and offsets cache keys hash.

An evaluation entry's rows come from a manifest (JSONL; the row format is defined in
`textme.data.manifest`, docs/CONFIG.md) or straight from a benchmark as it is
distributed (`benchmark_inputs`: `textme.data`'s readers, docs/BENCHMARKS.md). Either
way the evaluate stage gets the same `EvalInputs`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.config import EvalSpec
from tasks.sources import cached_file_key
from textme.data import EvalInputs

__all__ = [
    "InputError",
    "ItemSample",
    "list_items",
    "sample_items",
    "EvalInputs",
    "read_eval_manifest",
    "benchmark_of",
    "benchmark_inputs",
    "benchmark_fingerprint",
    "eval_fingerprint",
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


# --------------------------------------------------------------------------- evaluation inputs


def _wrap(call, *args, **kwargs):
    """Run a textme.data call; its one-line errors become InputErrors (user errors)."""
    from textme.data import DataError

    try:
        return call(*args, **kwargs)
    except DataError as exc:
        raise InputError(str(exc)) from None


def benchmark_of(spec: Any) -> dict[str, Any] | None:
    """The entry's `benchmark:` block as {name, root, split, options, items_dir}, or
    None for a `manifest:` entry. Accepts a mapping or an object with those attributes
    (whatever tasks.config gives `spec.benchmark`); missing keys are None / {}."""
    block = getattr(spec, "benchmark", None)
    if block is None:
        return None
    get = block.get if isinstance(block, Mapping) else (lambda k, d=None: getattr(block, k, d))
    return {"name": get("name"), "root": get("root"), "split": get("split"),
            "options": dict(get("options") or {}), "items_dir": get("items_dir")}


def read_eval_manifest(spec: EvalSpec) -> EvalInputs:
    """The entry's evaluation rows, from its `manifest:` file or its `benchmark:` block."""
    bench = benchmark_of(spec)
    if bench is not None:
        data = benchmark_inputs(bench["name"], bench["root"], bench["split"], bench["items_dir"],
                                options=bench["options"])
        if data.task != spec.task:
            raise InputError(f"evaluation {spec.name!r}: benchmark {bench['name']!r} is a {data.task} "
                             f"benchmark, the entry's task is {spec.task}")
        return data
    from textme.data import read_manifest

    out = _wrap(read_manifest, spec.manifest, spec.task, name=spec.name)
    out.source_fp = cached_file_key(out.manifest)
    return out


# A benchmark read once per process per (arguments, state of the files it read).
_BENCHMARKS: dict[str, tuple[tuple, Any, EvalInputs]] = {}
_ITEM_FIELDS = ("item", "source_item", "target_item")


def _stamp(paths: list[str]) -> tuple:
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            return ()
        out.append((p, st.st_size, st.st_mtime_ns))
    return tuple(out)


def benchmark_inputs(
    name: str,
    root: str | os.PathLike,
    split: str | None = None,
    items_dir: str | os.PathLike | None = None,
    *,
    options: dict[str, Any] | None = None,
) -> EvalInputs:
    """The EvalInputs a manifest of this benchmark would give, read straight from the
    benchmark's files (textme.data), with `source_fp` the rows' content fingerprint
    (`benchmark_fingerprint`).

    items_dir: where readers that materialise items (ScanObjectNN, ModelNet40) write
    them. The files are read once per process while they are unchanged; the
    fingerprint is recomputed each call (item files are hashed once per size and mtime).
    """
    from storage.fingerprint import canonical_json, fingerprint
    from textme.data import get_benchmark, parse_rows, read_benchmark

    options = dict(options or {})
    memo = canonical_json({"name": name, "root": os.path.abspath(os.fspath(root)), "split": split,
                           "items_dir": None if items_dir is None else os.path.abspath(os.fspath(items_dir)),
                           "options": options})
    hit = _BENCHMARKS.get(memo)
    if hit is not None and hit[0] and _stamp([s for s, _, _ in hit[0]]) == hit[0] and all(
            os.path.isfile(p) for p in hit[2].all_item_paths()):
        data, out = hit[1], hit[2]
    else:
        data = _wrap(read_benchmark, name, root, split, items_dir=items_dir, **options)
        out = _wrap(parse_rows, data.rows, data.task, base=root, source=f"benchmark:{data.label}",
                    shown=f"{name} ({root})", dataset=data.label)
        _BENCHMARKS[memo] = (_stamp(data.sources), data, out)
    keyed = [{k: (cached_file_key(v) if k in _ITEM_FIELDS and v else v) for k, v in row.items()} for row in data.rows]
    out = copy.deepcopy(out)  # the memo's copy stays as read
    out.source_fp = fingerprint({"benchmark": name, "version": get_benchmark(name).version, "split": data.split,
                                 "rows": keyed}, kind="benchmark-rows")
    return out


def benchmark_fingerprint(
    name: str,
    root: str | os.PathLike,
    split: str | None = None,
    items_dir: str | os.PathLike | None = None,
    *,
    options: dict[str, Any] | None = None,
) -> str:
    """Content fingerprint of a benchmark's rows: its captions, labels, queries and
    relevance, each item file by content (not path), the split and the reader's
    version. Editing a benchmark file so that a row changes changes it; moving the
    benchmark's folder does not."""
    return eval_fingerprint(benchmark_inputs(name, root, split, items_dir, options=options))


def eval_fingerprint(inputs: EvalInputs) -> str:
    """The evaluate stage's inputs fingerprint of parsed EvalInputs."""
    from storage.fingerprint import fingerprint

    if inputs.manifest.startswith("benchmark:"):
        return fingerprint({"benchmark": inputs.source_fp})
    return fingerprint(
        {
            "manifest": inputs.source_fp or cached_file_key(inputs.manifest),
            "items": [cached_file_key(p) for p in inputs.all_item_paths()],
        }
    )


def eval_inputs_fingerprint(spec: EvalSpec) -> str:
    """Content fingerprint of an entry's inputs: a manifest and every item file it
    names, or a benchmark's rows (`benchmark_fingerprint`)."""
    return eval_fingerprint(read_eval_manifest(spec))
