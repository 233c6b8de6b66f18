"""What checking stage outputs costs a warm run of the demo pipeline, and `textme verify`.

The demo config runs once cold, then `--warm` warm runs alternate between the cache
policy as shipped (every cached stage's outputs checked before its record is trusted,
tasks/cache_policy.py) and a baseline in the same process whose check is switched off
(`drop_record_if_outputs_damaged` replaced by a no-op: Prefect's plain record lookup).
The flow's wall time moves in steps of about a second (Prefect polls task states), so
the time spent inside the checks (summed over the stages, which run in parallel
threads) is reported too. Also timed: one `verify_all` (every byte of every stage
output, table part and segment).

    .venv/bin/python benchmarks/bench_integrity.py
    .venv/bin/python benchmarks/bench_integrity.py --warm 6
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

from benchmarks.bench_warm_run import demo_config_in, timed_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=4, help="warm runs of each kind after the cold one")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    import tasks.cache_policy as policy
    from tasks.config import load_config
    from tasks.verify import verify_all

    checked_fn = policy.drop_record_if_outputs_damaged
    checked, unchecked, inside = [], [], [0.0]

    def timed_check(params, key):
        started = time.perf_counter()
        try:
            return checked_fn(params, key)
        finally:
            inside[0] += time.perf_counter() - started

    with tempfile.TemporaryDirectory() as scratch:
        config = demo_config_in(Path(scratch))
        with prefect_test_harness(server_startup_timeout=180):
            cold = timed_run(config)
            for _ in range(args.warm):
                policy.drop_record_if_outputs_damaged = timed_check
                checked.append(timed_run(config))
                policy.drop_record_if_outputs_damaged = lambda params, key: False
                unchecked.append(timed_run(config))
            policy.drop_record_if_outputs_damaged = checked_fn
        started = time.perf_counter()
        problems = verify_all(load_config(config))
        verify = time.perf_counter() - started
    c, u = statistics.median(checked), statistics.median(unchecked)
    print(f"demo pipeline flow, {os.cpu_count()} CPUs; cold run {cold:.2f} s")
    print(f"  warm, outputs checked    {c:7.2f} s   (runs: {', '.join(f'{w:.2f}' for w in checked)})")
    print(f"  warm, record lookup only {u:7.2f} s   (runs: {', '.join(f'{w:.2f}' for w in unchecked)})")
    print(f"  checked / lookup only    {c / u:7.2f}x")
    per_run = inside[0] / len(checked)
    print(f"  inside the checks        {per_run:7.2f} s per warm run, summed over stages ({per_run / c:.2f}x its wall time)")
    print(f"  verify_all               {verify:7.2f} s   ({verify / cold:.2f}x the cold run; {len(problems)} problems)")


if __name__ == "__main__":
    main()
