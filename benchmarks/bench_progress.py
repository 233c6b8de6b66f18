"""What progress reporting (tasks/progress.py) costs the demo's tiny stages.

Two measurements, both against a baseline measured in the same run:

1. per stage: a fill-sized stage (one `advance` of 100 items) and a training-sized one
   (25 `update`s, one per epoch), with progress off, in the default mode outside a
   terminal and outside Prefect (what tests and pipes see), inside a Prefect task run
   (artifacts only for stages longer than 2 s: none here), and with terminal bars
   forced on; against the toy encoder embedding the same 100 items;
2. the demo pipeline flow, cold, in a fresh workdir each: `TEXTME_PROGRESS=0` against
   the default (no terminal here: the long stages' progress artifacts are what costs).

    .venv/bin/python benchmarks/bench_progress.py [--repeat 200] [--flows]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def per_stage(repeat: int) -> dict[str, float]:
    """Median microseconds of one fill-sized and one training-sized stage's progress."""
    from tasks.progress import stage_progress

    def fill() -> None:
        with stage_progress("embed toy/modal", 100, "items") as bar:
            bar.advance(100)

    def train() -> None:
        with stage_progress("train toy (textme)", 25, "epochs") as bar:
            for epoch in range(1, 26):
                bar.update(epoch, loss=1.0 / epoch)

    out = {}
    for name, stage in (("fill", fill), ("train", train)):
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            stage()
            times.append(time.perf_counter() - started)
        out[name] = statistics.median(times) * 1e6
    return out


def in_task(repeat: int) -> dict[str, float]:
    from prefect import flow, task

    @task
    def measure() -> dict[str, float]:
        return per_stage(repeat)

    @flow
    def bench() -> dict[str, float]:
        return measure()

    return bench()


def encode_baseline(repeat: int, folder: Path) -> float:
    """Median microseconds of the toy encoder embedding 100 demo items (the work itself)."""
    from demo.assets import prepare_demo
    from textme.encoders import get_encoder

    items = sorted((Path(prepare_demo(folder)["root"]) / "items" / "image").iterdir())[:100]
    enc = get_encoder("toy", modality="image", tower_seed=1, dim=64)
    times = []
    for _ in range(max(5, repeat // 20)):
        started = time.perf_counter()
        enc.encode("modal", [str(p) for p in items])
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def flow_seconds(config: Path, progress: str) -> float:
    from flows.pipeline import pipeline

    os.environ["TEXTME_PROGRESS"] = progress
    try:
        started = time.perf_counter()
        state = pipeline(str(config), return_state=True)
        seconds = time.perf_counter() - started
    finally:
        os.environ.pop("TEXTME_PROGRESS", None)
    if not state.is_completed():
        raise SystemExit(f"pipeline run failed: {state.message}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--flows", type=int, default=1, help="cold demo runs per mode (0: skip)")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from benchmarks.bench_warm_run import demo_config_in

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        baseline = encode_baseline(args.repeat, scratch / "assets")
        rows = []
        os.environ["TEXTME_PROGRESS"] = "0"
        rows.append(("off", per_stage(args.repeat)))
        os.environ.pop("TEXTME_PROGRESS")
        rows.append(("default, no terminal", per_stage(args.repeat)))
        os.environ["TEXTME_PROGRESS"] = "1"
        with open(os.devnull, "w") as sink:
            stderr, sys.stderr = sys.stderr, sink
            try:
                rows.append(("terminal bars (forced)", per_stage(args.repeat)))
            finally:
                sys.stderr = stderr
        os.environ.pop("TEXTME_PROGRESS")
        with prefect_test_harness(server_startup_timeout=180):
            rows.append(("in a Prefect task run", in_task(args.repeat)))
            flows = {"0": [], "": []}
            for i in range(args.flows):
                for mode in flows:
                    folder = scratch / f"flow-{mode or 'default'}-{i}"
                    folder.mkdir()
                    flows[mode].append(flow_seconds(demo_config_in(folder), mode))

    print(f"toy encoder, 100 demo items (the work of a small fill): {baseline:9.1f} us")
    print(f"{'progress mode':26s} {'fill stage':>12s} {'/ encode':>9s} {'train stage (25 epochs)':>24s}")
    for name, t in rows:
        print(f"{name:26s} {t['fill']:9.1f} us {t['fill'] / baseline:8.3f}x {t['train']:21.1f} us")
    if args.flows:
        off, default = statistics.median(flows["0"]), statistics.median(flows[""])
        print(f"demo pipeline flow, cold: TEXTME_PROGRESS=0 {off:.2f} s, default {default:.2f} s: "
              f"{default / off:.3f}x ({args.flows} run(s) each)")


if __name__ == "__main__":
    main()
