"""The `runs` table as users see it: one row per flow run, and runs whose process died.

`tasks.results.record_run` writes a row when a flow run starts (status ``running``, with
the host and pid of its process) and one when it ends; the table is keyed by run_id
(storage.tables.LATEST), so every read shows one row per run, its latest.

A run killed with SIGKILL, by the OOM killer or a power cut never writes its end row.
Such a run is recognised by its process: a ``running`` row recorded on this host whose
pid is gone (or is now another process, started after the run) is ``crashed``.
`textme runs` shows it so at once, without writing; the next run records it (a new
row, status ``crashed``), so DuckDB users see it too. Rows from another host cannot be
checked from here and stay ``running`` until a run on their host looks.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from typing import Any

__all__ = ["HOST", "process_alive", "effective_status", "list_runs", "record_crashed", "duration_s"]

#: This machine's name, as recorded in `runs.host`.
HOST = socket.gethostname()

# A pid reused by a process started this long after the run started is another process.
_PID_REUSE_SLACK_S = 2.0


def process_alive(pid: int, started_at: datetime | None = None) -> bool:
    """Whether process `pid` of this host still runs (and, given `started_at`, is the
    process that started then, not a later one that reused the pid)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a declared dependency
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return started_at is None or created <= started_at.timestamp() + _PID_REUSE_SLACK_S


def effective_status(row: dict[str, Any]) -> str:
    """The row's status, or ``crashed`` for a ``running`` run of this host whose process is gone."""
    if row["status"] == "running" and row.get("host") == HOST and row.get("pid") is not None:
        if not process_alive(int(row["pid"]), row.get("started_at")):
            return "crashed"
    return row["status"]


def duration_s(row: dict[str, Any], status: str, now: datetime | None = None) -> float | None:
    """Seconds from start to end; so far, for a run still running; None for a crashed one."""
    start, end = row.get("started_at"), row.get("finished_at")
    if start is None:
        return None
    if end is None:
        if status != "running":
            return None
        end = now or datetime.now(timezone.utc)
    return (end - start).total_seconds()


def list_runs(tables: Any) -> list[dict[str, Any]]:
    """Every run (one row each, oldest first) with `status` as it really is and
    `duration_s`; `recorded_status` is what the table says."""
    out = []
    for row in tables.read("runs").to_pylist():
        status = effective_status(row)
        out.append({**row, "recorded_status": row["status"], "status": status,
                    "duration_s": duration_s(row, status)})
    return sorted(out, key=lambda r: (r["started_at"], r["run_id"]))


def record_crashed(tables: Any) -> list[str]:
    """Record every dead ``running`` run of this host as ``crashed``; their ids."""
    crashed = []
    for run in list_runs(tables):
        if run["status"] == "crashed" and run["recorded_status"] == "running":
            row = {k: run[k] for k in _columns()}
            row.update(status="crashed", updated_at=datetime.now(timezone.utc))
            tables.append("runs", [row], part=f"{run['run_id']}.crashed")
            crashed.append(run["run_id"])
    return crashed


def _columns() -> list[str]:
    from storage.tables import SCHEMAS

    return SCHEMAS["runs"].names
