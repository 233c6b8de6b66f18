"""Benchmark readers by name: a benchmark as it is distributed -> manifest rows.

    from textme.data import read_benchmark, list_benchmarks
    bench = read_benchmark("flickr30k", "/data/flickr30k")          # test split
    bench.task, len(bench.rows), bench.rows[0]   # "retrieval", 1000, {"item": ..., "captions": [...]}

A reader is a plain function over files (no cache, no pipeline):
`reader(root, split, items_dir, **options) -> BenchmarkData`. `items_dir` is where a
reader whose items are not files in the download (ScanObjectNN's h5, ModelNet40's
text point clouds) writes them, named by content so a rerun reuses them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textme.data._layout import BenchmarkError

__all__ = ["Benchmark", "BenchmarkData", "register_benchmark", "get_benchmark", "list_benchmarks",
           "read_benchmark"]


@dataclass
class BenchmarkData:
    """What a reader returns: manifest rows (item paths absolute) and what it read."""

    name: str
    task: str
    split: str | None
    rows: list[dict[str, Any]]
    sources: list[str] = field(default_factory=list)  # metadata files read (not items)
    notes: list[str] = field(default_factory=list)  # what was dropped, and why

    @property
    def label(self) -> str:
        """`name` or `name:split`: how results and messages name this benchmark."""
        return self.name if not self.split else f"{self.name}:{self.split}"


@dataclass(frozen=True)
class Benchmark:
    name: str
    task: str
    description: str  # one line, for `textme manifest --list`
    reader: Callable[..., BenchmarkData]
    splits: tuple[str, ...]  # known splits; the first is the default ("" = no split)
    options: dict[str, str] = field(default_factory=dict)  # option -> what it does
    download: str = ""  # where the files come from (docs/BENCHMARKS.md says more)
    #: Bump when the same files would give different rows (the rows' fingerprint has it).
    version: int = 1


_REGISTRY: dict[str, Benchmark] = {}


def register_benchmark(bench: Benchmark) -> Benchmark:
    if bench.name in _REGISTRY:
        raise ValueError(f"benchmark {bench.name!r} is already registered")
    _REGISTRY[bench.name] = bench
    return bench


def _load_builtins() -> None:
    # Importing the reader modules registers them.
    from textme.data import audio, image_text, mixbench, points, video, xray  # noqa: F401


def list_benchmarks() -> list[Benchmark]:
    """Every registered benchmark, sorted by name."""
    _load_builtins()
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def get_benchmark(name: str) -> Benchmark:
    _load_builtins()
    if name not in _REGISTRY:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def read_benchmark(
    name: str,
    root: str | os.PathLike,
    split: str | None = None,
    *,
    items_dir: str | os.PathLike | None = None,
    **options: Any,
) -> BenchmarkData:
    """Read a benchmark from its downloaded folder into manifest rows.

    split: one of the benchmark's splits (None: its default); options: the reader's own
    (see `Benchmark.options`); an unknown split or option is an error listing the known.
    """
    bench = get_benchmark(name)
    if split is None or split == "":
        split = bench.splits[0] if bench.splits else None
    elif bench.splits and split not in bench.splits:
        raise BenchmarkError(f"{name}: unknown split {split!r}; known: {', '.join(bench.splits)}")
    unknown = sorted(set(options) - set(bench.options))
    if unknown:
        known = ", ".join(bench.options) or "none"
        raise BenchmarkError(f"{name}: unknown option {unknown[0]!r}; known: {known}")
    root = Path(root).expanduser()
    if not root.exists():
        raise BenchmarkError(f"{name}: {root} not found (the benchmark's downloaded folder)")
    data = bench.reader(root, split or None, Path(items_dir) if items_dir is not None else None, **options)
    if not data.rows:
        raise BenchmarkError(f"{name}: {root}: no rows for split {split!r}")
    return data
