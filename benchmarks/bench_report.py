"""What the report stage adds to a warm demo run, and what drawing it costs.

The demo config is copied with its workdir in a fresh temporary folder and run once
cold. Then, alternating, `--warm` warm runs with the report stage and as many with the
stage replaced by a no-op task (same process, same Prefect server, every other stage a
cache hit); the report task's own run time in those warm runs (artifact included: the
stage runs last, so this is what it adds, and it is far less noisy than a difference
of two whole runs on a busy machine); and the report alone: reused figures (what a
no-change re-run does) and drawn from scratch (what a cold run or `textme report` does).

    .venv/bin/python benchmarks/bench_report.py
    .venv/bin/python benchmarks/bench_report.py --warm 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_warm_run import demo_config_in, timed_run  # noqa: E402


def _report_task_seconds(since) -> list[float]:
    """Durations of the `report` task runs that started after `since` (the stage's own
    time, publishing the artifact included: what it adds, as the flow's last stage)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName, TaskRunFilterStartTime

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(like_="report-"), start_time=TaskRunFilterStartTime(after_=since)))
    return [r.total_run_time.total_seconds() for r in runs if r.state and r.state.is_completed()]


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f} s  (runs: {', '.join(f'{x:.2f}' for x in xs)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=5, help="warm runs with, and as many without, the report")
    args = parser.parse_args()

    from prefect import task
    from prefect.testing.utilities import prefect_test_harness

    import flows.pipeline as pipeline_module
    from tasks.config import load_config
    from tasks.report import latest_run_id, write_report

    with_report = pipeline_module.run_report
    no_report = task(name="skipped-stage", persist_result=False)(lambda config: None)
    with tempfile.TemporaryDirectory() as scratch:
        config = demo_config_in(Path(scratch))
        with prefect_test_harness(server_startup_timeout=180):
            cold = timed_run(config)
            since = datetime.now(timezone.utc)
            on, off = [], []
            for _ in range(args.warm):
                pipeline_module.run_report = with_report
                on.append(timed_run(config))
                pipeline_module.run_report = no_report
                off.append(timed_run(config))
            pipeline_module.run_report = with_report
            stage = _report_task_seconds(since)
        cfg = load_config(config)
        run_id = latest_run_id(cfg)
        reused, drawn = [], []
        for _ in range(3):
            started = time.perf_counter()
            write_report(cfg, run_id)
            reused.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = write_report(cfg, run_id, reuse=False)
            drawn.append(time.perf_counter() - started)
    added = statistics.median(on) - statistics.median(off)
    print(f"demo pipeline flow, {os.cpu_count()} CPUs; cold run {cold:.2f} s; {len(report.figures)} figures")
    print(f"  warm run with the report    {_median(on)}")
    print(f"  warm run without it         {_median(off)}")
    print(f"  the report adds             {added:6.2f} s  ({added / statistics.median(off):.0%} of a warm run, "
          f"{added / cold:.1%} of the cold one)")
    print(f"  the report task, warm runs  {_median(stage)}")
    print(f"  report alone, figures reused  {_median(reused)}")
    print(f"  report alone, all drawn       {_median(drawn)}")


if __name__ == "__main__":
    main()
