"""tasks/budget.py: reservations against a memory budget, across threads."""

from __future__ import annotations

import threading
import time

from tasks.budget import GB, MemoryBudget, budget_bytes, default_budget_bytes


def _run(budget: MemoryBudget, sizes: list[int], limit: int) -> tuple[list[tuple[float, float]], list[bool]]:
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(sizes)
    alone: list[bool] = [False] * len(sizes)

    def work(i: int) -> None:
        with budget.reserve(sizes[i], limit) as big:
            start = time.perf_counter()
            time.sleep(0.15)
            spans[i], alone[i] = (start, time.perf_counter()), big

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return spans, alone


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_what_fits_runs_together_and_what_does_not_waits():
    budget = MemoryBudget()
    spans, _ = _run(budget, [40, 40], 100)
    assert _overlap(*spans)
    spans, _ = _run(budget, [60, 60], 100)
    assert not _overlap(*spans)
    assert budget.reserved == 0


def test_a_request_larger_than_the_budget_runs_alone():
    spans, alone = _run(MemoryBudget(), [500, 10, 10], 100)
    assert alone == [True, False, False]
    assert not _overlap(spans[0], spans[1]) and not _overlap(spans[0], spans[2])


def test_budget_from_the_config():
    assert budget_bytes(2.0) == 2 * GB
    assert budget_bytes(None) == default_budget_bytes() > 0
