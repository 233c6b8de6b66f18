"""The tables' own manifest: checksummed parts, parts nobody listed, damage, concurrent
writers, compaction (atomic for readers), keyed `runs`, adopting pre-manifest tables."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import table_worker
from storage_helpers import flip_byte, fs_and_path, remove_file
from test_storage_tables import NOW, result

from storage.tables import AUTO_COMPACT_PARTS, SCHEMAS, TableStore

WORKER = Path(table_worker.__file__)


def entry_of(root: str, table: str, part_file: str) -> dict:
    """The manifest entry that lists `part_file` (relative to the root)."""
    fs, path = fs_and_path(root, table, "_manifest")
    for p in fs.find(path):
        if p.endswith(".json"):
            d = json.loads(fs.cat_file(p))
            if f"{table}/{d['file']}" == part_file:
                return d
    raise AssertionError(f"no entry lists {part_file}")


def write_raw(root: str, rel: str, rows: list[dict], drop: tuple[str, ...] = ()) -> None:
    """A Parquet file written behind the store's back (by hand, or by older code), an
    hour ago (reads do not report unlisted files of the last UNLISTED_GRACE_S)."""
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k not in drop} for r in rows])
    sink = io.BytesIO()
    pq.write_table(table, sink)
    fs, path = fs_and_path(root, rel)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, sink.getvalue())
    backdate(root, rel)


def backdate(root: str, rel: str, seconds: float = 3600) -> None:
    fs, path = fs_and_path(root, rel)
    then = time.time() - seconds
    if root.startswith("memory://"):
        fs.store[path].created = datetime.fromtimestamp(then, timezone.utc)
    else:
        os.utime(path, (then, then))


def run_row(run_id: str, status: str, *, finished=None, updated=None, **over) -> dict:
    row = dict(run_id=run_id, flow="textme-pipeline", config_name="demo", config_fp="f" * 64, code_version="v",
               started_at=NOW, finished_at=finished, status=status, stand_in=True, host="h", pid=1,
               updated_at=updated or finished or NOW)
    row.update(over)
    return row


def sorted_rows(table: pa.Table) -> list[tuple]:
    return sorted(tuple(sorted(r.items())) for r in table.to_pylist())


# --------------------------------------------------------------------------- listing


def test_every_part_is_listed_with_its_sha256_and_rows(root):
    tables = TableStore(root)
    tables.append("results", [result("retrieval", 0.5), result("retrieval", 0.6, metric="R@5"),
                              result("zero_shot", 0.7)], part="run-1")
    files = tables.files("results")
    assert len(files) == 2 and all(f.startswith(("results/task=retrieval/part-run-1.",
                                                 "results/task=zero_shot/part-run-1.")) for f in files)
    fs, _ = fs_and_path(root)
    for f, rows in zip(files, (2, 1)):
        entry = entry_of(root, "results", f)
        data = fs.cat_file(fs_and_path(root, f)[1])
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["rows"] == rows and entry["bytes"] == len(data) and entry["parts"] == ["run-1"]
    assert all(r.ok for r in tables.verify())


def test_a_part_dropped_in_by_hand_is_never_read_and_is_reported(root, caplog):
    tables = TableStore(root)
    tables.append("results", [result("retrieval", 84.0)], part="run-1")
    # the attack: a file that would make latest_results report R@1 12.34
    forged = result("retrieval", 12.34, run_id="run-9", created_at=NOW + timedelta(days=1))
    write_raw(root, "results/task=retrieval/part-run-9.parquet", [forged], drop=("task",))
    write_raw(root, "results/forged.parquet", [forged])
    with caplog.at_level("WARNING", logger="storage.tables"):
        scan = tables.scan("results")
        tables.read("results")  # reported once, not on every read
    assert scan.table.column("value").to_pylist() == [84.0]
    unlisted = sorted(p.file for p in scan.problems if p.kind == "unlisted")
    assert unlisted == ["results/forged.parquet", "results/task=retrieval/part-run-9.parquet"]
    assert len([r for r in caplog.records if "part-run-9" in r.getMessage()]) == 1
    report = {r.table: r for r in tables.verify()}["results"]
    assert not report.ok and len(report.kinds("unlisted")) == 2 and report.parts == 1
    assert tables.read("results", filters={"task": "retrieval"}).column("value").to_pylist() == [84.0]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_part_is_left_out_in_one_line_and_healed_by_its_writer(root, damage):
    tables = TableStore(root)
    first = [result("retrieval", 0.5), result("retrieval", 0.6, metric="R@5")]
    tables.append("results", first, part="run-1")
    tables.append("results", [result("retrieval", 0.9, run_id="run-2")], part="run-2")
    victim = next(f for f in tables.files("results") if "part-run-1." in f)
    fs, path = fs_and_path(root, victim)
    if damage == "truncate":
        fs.pipe_file(path, fs.cat_file(path)[:100])
    else:
        flip_byte(root, victim, 200)

    scan = tables.scan("results")
    assert scan.table.column("run_id").to_pylist() == ["run-2"]  # never a number from the damaged file
    (problem,) = scan.problems
    assert problem.kind == "damaged" and problem.file == victim
    assert "\n" not in str(problem) and victim in str(problem)
    (report,) = tables.verify(["results"])
    assert not report.ok and [p.file for p in report.kinds("damaged")] == [victim]

    assert tables.append("results", first, part="run-1") == 2  # the stage that wrote it re-runs: healed
    assert sorted(tables.read("results").column("value").to_pylist()) == [0.5, 0.6, 0.9]
    assert tables.verify(["results"])[0].ok
    assert not fs.exists(path)  # the damaged file went
    assert tables.append("results", first, part="run-1") == 0  # and it is idempotent again


def test_a_missing_part_and_an_unreadable_entry_are_reported_not_fatal(root):
    tables = TableStore(root)
    tables.append("training", [dict(run_id="r", encoder="a", variant=None, projection_fp=None, epoch=0,
                                    loss=1.0, lr=None, seconds=None)], part="a")
    tables.append("training", [dict(run_id="r", encoder="b", variant=None, projection_fp=None, epoch=0,
                                    loss=2.0, lr=None, seconds=None)], part="b")
    tables.append("training", [dict(run_id="r", encoder="c", variant=None, projection_fp=None, epoch=0,
                                    loss=3.0, lr=None, seconds=None)], part="c")
    a, b, _ = tables.files("training")
    backdate(root, b)
    remove_file(root, a)
    fs, entry = fs_and_path(root, "training", "_manifest", "b.json")
    fs.pipe_file(entry, b"{not json")
    scan = tables.scan("training")
    assert scan.table.column("encoder").to_pylist() == ["c"]
    kinds = {p.kind: p.file for p in scan.problems}
    assert kinds["missing"] == a and kinds["bad entry"] == "training/_manifest/b.json"
    assert kinds["unlisted"] == b  # its entry is unreadable, so nothing lists it


def test_concurrent_appends_from_threads_lose_no_entry(root):
    tables = TableStore(root)

    def work(worker: int) -> None:
        for i in range(12):
            tables.append("embed_log", [table_worker.log_row(str(worker), i)],
                          part=f"w{worker}-{i}" if i % 2 else None)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = tables.read("embed_log")
    assert got.num_rows == 8 * 12
    assert len(set(zip(got.column("run_id").to_pylist(), got.column("stage").to_pylist()))) == 8 * 12
    assert tables.verify(["embed_log"])[0].ok


def test_concurrent_appends_from_processes_lose_no_entry(disk_root):
    procs = [subprocess.Popen([sys.executable, str(WORKER), disk_root, "append", str(w), "15"]) for w in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    tables = TableStore(disk_root)
    assert tables.read("embed_log").num_rows == 4 * 15
    assert tables.verify(["embed_log"])[0].ok


# --------------------------------------------------------------------------- compaction


def append_run(tables: TableStore, i: int) -> int:
    at = NOW + timedelta(minutes=i)
    rows = [result(task, float(i), run_id=f"run-{i}", created_at=at, metric=m)
            for task in ("retrieval", "zero_shot", "emergent", "mixed_search") for m in ("R@1", "R@5")]
    return tables.append("results", rows, part=f"run-{i}")


def test_compaction_keeps_every_row_exactly_once(root):
    tables = TableStore(root)
    for i in range(24):
        append_run(tables, i)
    assert len(tables.files("results")) == 96  # the count: a part per run and task
    before = sorted_rows(tables.read("results"))
    report = tables.compact("results")
    assert (report.parts_before, report.parts_after, report.rows_before, report.rows_after) == (96, 4, 192, 192)
    assert len(tables.files("results")) == 4
    assert sorted_rows(tables.read("results")) == before
    fs, path = fs_and_path(root, "results")
    on_disk = [p for p in fs.find(path) if p.endswith(".parquet")]
    assert len(on_disk) == 4  # the merged parts were deleted
    assert tables.verify(["results"])[0].ok
    assert append_run(tables, 3) == 0  # a retried writer of a merged part still writes nothing
    append_run(tables, 24)
    tables.compact("results")  # compacting a compacted part keeps what it holds
    assert append_run(tables, 3) == 0 and append_run(tables, 24) == 0
    assert len(tables.read("results").to_pylist()) == 200


def test_compaction_starts_by_itself_past_the_threshold(root):
    tables = TableStore(root)
    for i in range(AUTO_COMPACT_PARTS - 1):
        append_run(tables, i)
    assert tables.compact_if_needed() == []
    append_run(tables, 99)
    (report,) = tables.compact_if_needed()
    assert report.table == "results" and report.parts_after == 4
    assert tables.read("results").num_rows == AUTO_COMPACT_PARTS * 8


def test_a_damaged_part_is_not_compacted_away(root):
    tables = TableStore(root)
    for i in range(3):
        append_run(tables, i)
    victim = next(f for f in tables.files("results") if "task=retrieval/part-run-1." in f)
    flip_byte(root, victim, 150)
    report = tables.compact("results")
    assert [p.file for p in report.problems] == [victim]
    assert victim in tables.files("results")  # still listed: its writer can heal it
    assert append_run(tables, 1) == 2  # rewrites the damaged retrieval part only
    assert tables.read("results").num_rows == 24 and tables.verify(["results"])[0].ok


def check_reads(lines: list[str], per_part: int) -> None:
    """Every read saw whole parts, none twice (not old and merged parts both), and never
    fewer rows than the read before (not neither)."""
    last = 0
    for line in lines:
        rows, distinct = map(int, line.split())
        assert rows == distinct, f"a read saw {rows} rows but {distinct} distinct ones: duplicates"
        assert rows % per_part == 0 and rows >= last, f"a read saw {rows} rows after {last}"
        last = rows


def test_compaction_is_atomic_for_a_concurrent_reader_thread(root):
    tables = TableStore(root)
    for i in range(4):
        append_run(tables, i)
    stop = threading.Event()
    seen: list[str] = []

    def reader() -> None:
        other = TableStore(root)
        while not stop.is_set():
            t = other.read("results")
            pairs = set(zip(t.column("run_id").to_pylist(), t.column("task").to_pylist(),
                            t.column("metric").to_pylist()))
            seen.append(f"{t.num_rows} {len(pairs)}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(4, 16):
            append_run(tables, i)
            tables.compact("results")
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 5
    check_reads(seen, 2)  # an append is atomic per partition (2 rows)
    assert tables.read("results").num_rows == 16 * 8


def test_compaction_is_atomic_for_a_reader_process(disk_root):
    tables = TableStore(disk_root)
    for i in range(4):
        append_run(tables, i)
    reader = subprocess.Popen([sys.executable, str(WORKER), disk_root, "read", "8"], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    i = 4
    while reader.poll() is None and i < 60:
        append_run(tables, i)
        tables.compact("results")
        i += 1
    out, _ = reader.communicate(timeout=60)
    assert reader.returncode == 0
    lines = out.split("\n")[:-1]
    assert len(lines) > 5
    check_reads(lines, 2)
    assert tables.read("results").num_rows == i * 8


# --------------------------------------------------------------------------- keyed runs


def test_runs_show_one_row_per_run_with_its_latest_status(root):
    tables = TableStore(root)
    end = NOW + timedelta(seconds=30)
    tables.append("runs", [run_row("r1", "running")], part="r1.started")
    tables.append("runs", [run_row("r2", "running")], part="r2.started")
    tables.append("runs", [run_row("r1", "completed", finished=end)], part="r1.finished")
    got = {r["run_id"]: r["status"] for r in tables.read("runs").to_pylist()}
    assert got == {"r1": "completed", "r2": "running"}
    assert tables.read("runs", history=True).num_rows == 3
    assert tables.read("runs", filters={"status": "running"}).column("run_id").to_pylist() == ["r2"]
    tables.compact("runs")
    assert tables.read("runs", history=True).num_rows == 2  # compaction keeps each run's latest row
    assert {r["run_id"]: r["status"] for r in tables.read("runs").to_pylist()} == got
    tables.append("runs", [run_row("r2", "crashed", updated=end)], part="r2.crashed")
    assert {r["run_id"]: r["status"] for r in tables.read("runs").to_pylist()} == {"r1": "completed",
                                                                                 "r2": "crashed"}


# --------------------------------------------------------------------------- pre-manifest tables


def test_tables_written_before_manifests_are_unlisted_until_adopted(root):
    old = [result("retrieval", 0.5), result("retrieval", 0.6, metric="R@5")]
    write_raw(root, "results/task=retrieval/part-run-1.parquet", old, drop=("task",))
    # the old runs schema had no host, pid, updated_at; its started and finished rows
    write_raw(root, "runs/part-r1.started.parquet", [run_row("r1", "running")], drop=("host", "pid", "updated_at"))
    write_raw(root, "runs/part-r1.finished.parquet",
              [run_row("r1", "completed", finished=NOW + timedelta(seconds=5))], drop=("host", "pid", "updated_at"))
    write_raw(root, "results/task=retrieval/notes.parquet", [{"x": 1}])
    tables = TableStore(root)
    scan = tables.scan("results")
    assert scan.table.num_rows == 0
    assert {p.kind for p in scan.problems} == {"unlisted"} and "textme tables adopt" in scan.problems[0].detail

    adopted, refused = tables.adopt("results")
    assert adopted == ["results/task=retrieval/part-run-1.parquet"]
    assert [p.file for p in refused] == ["results/task=retrieval/notes.parquet"]
    assert sorted(tables.read("results").column("value").to_pylist()) == [0.5, 0.6]
    assert tables.append("results", old, part="run-1") == 0  # the old part counts as written
    assert len(tables.adopt("runs")[0]) == 2
    (run,) = tables.read("runs").to_pylist()
    assert run["status"] == "completed" and run["host"] is None and run["updated_at"] is None
    assert tables.adopt("results") == ([], refused)  # once: nothing new to adopt


def test_verify_covers_every_table(root):
    tables = TableStore(root)
    tables.append("results", [result("retrieval", 0.5)])
    reports = tables.verify()
    assert [r.table for r in reports] == list(SCHEMAS)
    assert all(r.ok for r in reports) and {r.table: r.rows for r in reports}["results"] == 1
    assert str(reports[list(SCHEMAS).index("results")]) == "table results: 1 parts, 1 rows, ok"


def test_old_rows_read_with_new_nullable_columns(root):
    tables = TableStore(root)
    write_raw(root, "runs/part-x.parquet", [run_row("x", "running")], drop=("host", "pid", "updated_at"))
    tables.adopt("runs")
    assert tables.read("runs").schema == SCHEMAS["runs"]
    assert Counter(r["status"] for r in tables.read("runs").to_pylist()) == {"running": 1}


def test_has_part_says_whether_a_stage_output_is_still_intact(root):
    tables = TableStore(root)
    tables.append("captions", [dict(dataset="coco", caption_id="1", text="a dog", text_sha="s", source=None,
                                    snapshot="fp1", ingested_at=NOW)], part="fp1")
    assert tables.has_part("captions", "fp1", partition="coco")
    assert not tables.has_part("captions", "fp1", partition="flickr") and not tables.has_part("captions", "fp2",
                                                                                               partition="coco")
    flip_byte(root, tables.files("captions")[0], 60)
    assert not tables.has_part("captions", "fp1", partition="coco")
    for i in range(3):
        append_run(tables, i)
    tables.compact("results")
    assert tables.has_part("results", "run-1", partition="retrieval")  # merged, still there
    with pytest.raises(ValueError, match="partition="):
        tables.has_part("results", "run-1")


def test_read_part_reads_one_runs_rows_from_every_partition_even_after_compaction(root):
    tables = TableStore(root)
    for i in range(3):
        append_run(tables, i)
    assert len(tables.read_part("results", "run-1")) == 8  # four task partitions, two metrics
    assert {r["run_id"] for r in tables.read_part("results", "run-1").to_pylist()} == {"run-1"}
    tables.compact("results")  # run-1's rows now share files with the other runs'
    rows = [r for r in tables.read_part("results", "run-1").to_pylist() if r["run_id"] == "run-1"]
    assert sorted((r["task"], r["metric"]) for r in rows) == sorted(
        (t, m) for t in ("retrieval", "zero_shot", "emergent", "mixed_search") for m in ("R@1", "R@5"))
    assert len(tables.read_part("results", "run-9")) == 0
    flip_byte(root, tables.files("results")[0], 60)  # a damaged file is left out, not served
    assert len(tables.read_part("results", "run-1")) < 24


def test_scan_added_reads_only_the_parts_a_holder_lacks_until_they_are_compacted(root):
    tables = TableStore(root)
    append_run(tables, 0)
    held = {(e.file, e.sha256) for e in tables.parts("results")}
    append_run(tables, 1)
    added = tables.scan_added("results", held)
    assert {r["run_id"] for r in added.table.to_pylist()} == {"run-1"} and len(added.table) == 8
    assert {e.file for e in added.parts} == {e.file for e in tables.parts("results")} - {f for f, _ in held}
    assert len(tables.scan_added("results", held | {(e.file, e.sha256) for e in added.parts}).table) == 0
    tables.compact("results")  # what `held` names is merged away: only a whole scan tells the rows
    assert tables.scan_added("results", held) is None
    with pytest.raises(ValueError, match="keyed"):
        tables.scan_added("runs", set())


def test_legacy_tables_are_told_from_a_killed_writers_leftover(root):
    tables = TableStore(root)
    write_raw(root, "training/part-old.parquet", [dict(run_id="r", encoder="e", variant=None, projection_fp=None,
                                                       epoch=0, loss=1.0, lr=None, seconds=None)])
    assert tables.legacy() == ["training"]
    tables.append("results", [result("retrieval", 0.5)])
    # a writer killed after its part, before its entry: not a table from before manifests
    write_raw(root, "results/task=retrieval/part-orphan.parquet", [result("retrieval", 0.1)], drop=("task",))
    assert tables.legacy() == ["training"]
    tables.adopt("training")
    assert tables.legacy() == []
