"""A separate process on a TableStore, for the concurrency tests.

    python table_worker.py ROOT append WORKER N      N appends of one embed_log row each
    python table_worker.py ROOT read SECONDS         reads `results` until SECONDS passed; prints
                                                     one line per read: rows, distinct (run, task)
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

from storage.tables import TableStore


def log_row(worker: str, i: int) -> dict:
    return dict(run_id=f"w{worker}", stage=f"s{i}", encoder="clip", tower="text", namespace="ns",
                n_requested=i, n_computed=i, seconds=0.0, created_at=datetime.now(timezone.utc),
                n_skipped=None, skipped=None, device=None)


def main() -> None:
    root, command, *args = sys.argv[1:]
    tables = TableStore(root)
    if command == "append":
        worker, n = args[0], int(args[1])
        for i in range(n):
            tables.append("embed_log", [log_row(worker, i)], part=f"w{worker}-{i}" if i % 2 else None)
    elif command == "read":
        stop = time.monotonic() + float(args[0])
        print("ready", flush=True)
        while time.monotonic() < stop:
            t = tables.read("results")
            pairs = set(zip(t.column("run_id").to_pylist(), t.column("task").to_pylist(),
                            t.column("metric").to_pylist()))
            print(t.num_rows, len(pairs), flush=True)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
