"""GPU work: the Prefect `gpu` slot around it, and the device a worker runs on.

`gpu_slot()` holds one slot of the Prefect global concurrency limit named `gpu`
(`prefect gcl create gpu --limit 1`) while a stage does real GPU work. Stages take it
only after the cache has said what is missing, so a fully cached stage never waits for
one (a tag limit on the task would: every cached task queued for the slot in turn).
Without such a limit, or outside a Prefect run, it holds nothing and costs nothing.
With Ray, GPUs are Ray resources (`num_gpus` per encoder) and the limit is not needed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["GPU_LIMIT", "gpu_slot", "device_of"]

#: Name of the Prefect global concurrency limit stages take a slot of.
GPU_LIMIT = "gpu"


def _limit_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return False
    return bool(limit.active)


def _in_run() -> bool:
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        return TaskRunContext.get() is not None or FlowRunContext.get() is not None
    except Exception:
        return False


@contextmanager
def gpu_slot() -> Iterator[None]:
    """One slot of the `gpu` limit for the duration of the block (when one is set)."""
    # Asked per call, so a limit created or removed between runs is honoured; the call
    # is made only by stages that have work to do. Checking first keeps Prefect from
    # warning "limit does not exist" in every stage of every run without a limit.
    if not _in_run() or not _limit_exists(GPU_LIMIT):
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(GPU_LIMIT, occupy=1):
        yield


def device_of(enc: Any) -> str:
    """Where `enc` runs in this process: "cpu", "cuda:0", ... (an encoder's "cuda" is
    the current CUDA device; inside a Ray actor that is the GPU Ray pinned for it)."""
    device = str(getattr(enc, "device", "cpu") or "cpu")
    if device == "cuda":
        import torch

        device = f"cuda:{torch.cuda.current_device()}"
    return device
