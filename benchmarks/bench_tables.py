"""What the tables' checks cost, as ratios against plain reads in the same run.

    python benchmarks/bench_tables.py [--captions 1000000] [--repeat 3]

- a checked read (every listed part's sha256 verified, then parsed) vs pyarrow reading
  the same files with no check;
- building the catalog afresh (a checked copy of every table) vs DuckDB copying the
  same Parquet files into a database file with no check; and rebuilding it after a
  run added its results (captions taken from the previous catalog, not re-read);
- compacting 96 results parts (24 runs x 4 tasks) into 4.
Medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402

from storage.catalog import build_catalog  # noqa: E402
from storage.tables import TableStore  # noqa: E402

NOW = datetime(2026, 1, 25, tzinfo=timezone.utc)


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def captions(n: int, parts: int) -> list[pa.Table]:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    per = n // parts
    out = []
    for p in range(parts):
        ids = range(p * per, (p + 1) * per)
        out.append(pa.table({
            "dataset": ["coco"] * per, "caption_id": [str(i) for i in ids],
            "text": [" ".join(rng.choices(words, k=10)) for _ in ids],
            "text_sha": [hashlib.sha256(str(i).encode()).hexdigest() for i in ids],
            "source": ["hf://x/y.parquet"] * per,
            "snapshot": [f"{p:064x}"] * per, "ingested_at": pa.array([NOW] * per, pa.timestamp("us", tz="UTC")),
        }))
    return out


def result_rows(run: int) -> list[dict]:
    return [dict(run_id=f"run-{run}", task=task, eval_name=task, dataset="d", source_encoder="clip",
                 target_encoder=None, variant="textme", metric=m, value=float(run), n_queries=100, stand_in=True,
                 captions_fp="c", source_identity_fp="s", target_identity_fp=None, offset_fp="o", projection_fp="p",
                 config_fp="f", code_version="v", created_at=NOW)
            for task in ("retrieval", "zero_shot", "emergent", "mixed_search") for m in ("R@1", "R@5", "R@10")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--captions", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tables"
        tables = TableStore(root)
        for i, t in enumerate(captions(args.captions, 4)):
            tables.append("captions", t, part=f"snap{i}")
        for run in range(24):
            tables.append("results", result_rows(run), part=f"run-{run}")
        files = [str(root / f) for f in tables.files("captions")]
        size = sum(Path(f).stat().st_size for f in files) / 1e6

        checked = timed(lambda: tables.read("captions"), args.repeat)
        plain = timed(lambda: ds.dataset(files, format="parquet").to_table(), args.repeat)
        print(f"captions: {args.captions} rows in 4 parts, {size:.0f} MB")
        print(f"checked read {checked:.3f} s vs plain pyarrow read {plain:.3f} s: {checked / plain:.2f}x")

        def plain_copy() -> None:
            path = Path(tmp) / "plain.duckdb"
            path.unlink(missing_ok=True)
            con = duckdb.connect(str(path))
            con.execute(f"create table captions as select * from read_parquet({files!r})")
            con.execute("checkpoint")
            con.close()

        catalog = Path(tmp) / "catalog.duckdb"

        def fresh() -> None:
            catalog.unlink(missing_ok=True)
            build_catalog(tables, catalog)

        runs = iter(range(100, 200))

        def after_a_run() -> None:
            tables.append("results", result_rows(next(runs)), part=f"run-{next(runs)}")
            build_catalog(tables, catalog)

        built = timed(fresh, args.repeat)
        copied = timed(plain_copy, args.repeat)
        rebuilt = timed(after_a_run, args.repeat)
        print(f"build_catalog afresh (every table) {built:.3f} s vs duckdb copying the captions files "
              f"{copied:.3f} s: {built / copied:.2f}x")
        print(f"build_catalog after a run (results changed) {rebuilt:.3f} s: {rebuilt / copied:.2f}x of the copy")

        t = time.perf_counter()
        report = tables.compact("results")
        print(f"compact results: {report} in {time.perf_counter() - t:.3f} s")


if __name__ == "__main__":
    main()
