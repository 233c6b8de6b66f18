"""A memory budget shared by the stages running in one process (training heads).

The thread runner starts every ready task at once; each training head holds its rows
(rows x dims x bytes, `textme.training.training_memory_bytes`), so six heads starting
together need six times one head's memory. `MEMORY.reserve(nbytes, budget)` waits until
`nbytes` fits beside what is already reserved; a head larger than the whole budget
waits until nothing else is reserved and then runs alone (with a warning).

The budget is per process: the thread runner runs every task in one process, so it
bounds the whole run there. Runners that spread tasks over several processes bound
each process by it (and should ask their scheduler for the memory too).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MemoryBudget", "MEMORY", "default_budget_bytes", "budget_bytes", "GB"]

GB = 1024**3


def default_budget_bytes() -> int:
    """Half of this machine's physical memory (4 GB where it cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 * GB
    return max(total // 2, 1)


def budget_bytes(memory_budget_gb: float | None) -> int:
    """The config's `training.memory_budget_gb` in bytes (None: `default_budget_bytes`)."""
    return default_budget_bytes() if memory_budget_gb is None else max(int(memory_budget_gb * GB), 1)


class MemoryBudget:
    """Reservations of bytes against a budget, across threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._reserved = 0

    @property
    def reserved(self) -> int:
        with self._cond:
            return self._reserved

    @contextmanager
    def reserve(self, nbytes: int, budget: int) -> Iterator[bool]:
        """Hold `nbytes` (at most `budget`) while the block runs; yields True when the
        request was larger than the budget (it then runs alone)."""
        alone = nbytes > budget
        need = min(max(int(nbytes), 0), budget)
        with self._cond:
            while self._reserved and self._reserved + need > budget:
                self._cond.wait()
            self._reserved += need
        try:
            yield alone
        finally:
            with self._cond:
                self._reserved -= need
                self._cond.notify_all()


#: The process's training budget (tasks/train.py).
MEMORY = MemoryBudget()
