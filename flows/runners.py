"""Task runners: threads on one machine (default) or a Dask cluster.

The per-encoder fan-out is independent until evaluation, so it spreads over whatever
runs the tasks. With Dask, tasks run in worker processes (or on other machines): they
only exchange small manifests, read their inputs from the workdir and the embedding
cache, so both must be on storage every worker sees (a shared filesystem, or an fsspec
URL such as s3:// for `cache:`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["RUNNERS", "make_runner"]

RUNNERS = ("thread", "dask")


def make_runner(kind: str = "thread", *, workers: int | None = None, address: str | None = None) -> Any:
    """A Prefect task runner.

    kind "thread": a ThreadPoolTaskRunner (`workers` threads; Prefect's default if None).
    kind "dask": a prefect-dask DaskTaskRunner: a local cluster of `workers` processes
    with one thread each (default 2), or the existing scheduler at `address`
    (e.g. "tcp://scheduler:8786").
    """
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers or 2,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": ":0",  # any free port: never collides with another cluster
            }
        )
    raise ValueError(f"unknown task runner {kind!r}; known: {', '.join(RUNNERS)}")
