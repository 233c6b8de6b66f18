"""Evaluation data: the manifest row format, and readers that turn benchmarks as they
are distributed into manifest rows. Plain functions over files (no cache, no pipeline).

    from textme.data import read_benchmark, list_benchmarks, write_manifest
    bench = read_benchmark("audiocaps", "/data/audiocaps", "test")
    write_manifest(bench.rows, "audiocaps_test.jsonl")

Errors are `DataError`s (ValueError) in one line: `BenchmarkError` for a benchmark's
files, `ManifestError` for a manifest's rows.
"""

from textme.data._layout import BenchmarkError
from textme.data.manifest import TASKS, EvalInputs, ManifestError, parse_rows, read_manifest, write_manifest
from textme.data.registry import Benchmark, BenchmarkData, get_benchmark, list_benchmarks, read_benchmark

#: Every error a reader or the manifest parser raises.
DataError = (BenchmarkError, ManifestError)

__all__ = [
    "TASKS",
    "EvalInputs",
    "ManifestError",
    "BenchmarkError",
    "DataError",
    "parse_rows",
    "read_manifest",
    "write_manifest",
    "Benchmark",
    "BenchmarkData",
    "get_benchmark",
    "list_benchmarks",
    "read_benchmark",
]
