"""Warm re-run against cold run of the demo pipeline, same process, same run.

The demo config (configs/demo.yaml) is copied with its workdir moved to a fresh
temporary folder, then the pipeline flow runs once cold (models, items, every vector
and head computed) and `--warm` more times on the unchanged config (every stage a
cache hit, no encoder forward pass). One Python process and one Prefect server serve
all runs, so the figures are the flow's own time, without interpreter start-up or
server start (`farm-bench -- make demo` measures those too).

    .venv/bin/python benchmarks/bench_warm_run.py
    .venv/bin/python benchmarks/bench_warm_run.py --warm 5 --keep /tmp/demo-work
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def demo_config_in(folder: Path) -> Path:
    """configs/demo.yaml with its workdir in `folder` and its caption sources absolute."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["workdir"] = str(folder / "work")
    for dataset in config["datasets"].values():
        dataset["source"] = str((REPO / "configs" / dataset["source"]).resolve())
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def timed_run(config: Path) -> float:
    from flows.pipeline import pipeline

    started = time.perf_counter()
    state = pipeline(str(config), return_state=True)
    seconds = time.perf_counter() - started
    if not state.is_completed():
        raise SystemExit(f"pipeline run failed: {state.message}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=3, help="warm runs after the cold one")
    parser.add_argument("--keep", type=Path, help="use this folder (must be empty) and keep it")
    args = parser.parse_args()

    import torch

    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        config = demo_config_in(folder)
        with prefect_test_harness(server_startup_timeout=180):
            cold = timed_run(config)
            warm = [timed_run(config) for _ in range(args.warm)]
    median = statistics.median(warm)
    print(f"demo pipeline flow, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    print(f"  cold run                 {cold:7.2f} s")
    print(f"  warm run (median of {len(warm)})  {median:7.2f} s   (runs: {', '.join(f'{w:.2f}' for w in warm)})")
    print(f"  warm / cold              {median / cold:7.2f}x")


if __name__ == "__main__":
    main()
