"""Task runners: threads on one machine (default) or Ray (one node or a cluster).

The per-encoder fan-out is independent until evaluation, so it spreads over whatever
runs the tasks. With Ray, prefect-ray places each task in a Ray worker process, and the
embed stages spread their shards over Ray actors holding the encoder's model, one per
GPU (or a fraction of one: the encoder's `num_gpus`), see tasks/shards.py. Tasks only
exchange small manifests and read their inputs from the workdir and the embedding
cache, so on a cluster both must be on storage every node sees (a shared filesystem at
the same path, or an fsspec URL such as s3:// for `cache:`); `check_shared_storage`
refuses the paths that cannot be.

Ray replaces the Dask runner: it did nothing Ray does not (process workers, a remote
scheduler), and it knew nothing of GPUs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["RUNNERS", "make_runner", "check_shared_storage"]

RUNNERS = ("thread", "ray")


def make_runner(kind: str = "thread", *, workers: int | None = None, address: str | None = None,
                num_gpus: int | None = None) -> Any:
    """A Prefect task runner.

    kind "thread": a ThreadPoolTaskRunner (`workers` threads; Prefect's default if None).
    kind "ray": a prefect-ray RayTaskRunner: a local Ray instance (`workers` CPUs, all
    cores if None; `num_gpus` logical GPUs declared, Ray's detection if None), or the
    running cluster at `address` ("auto", "ray://head:10001", "head:6379"), whose
    resources are its own. In a process already connected to Ray, that Ray is used.
    """
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=workers)
    if kind == "ray":
        from prefect_ray import RayTaskRunner

        if address:
            if workers is not None or num_gpus is not None:
                raise ValueError("--ray-address: a running cluster has its own CPUs and GPUs "
                                 "(--ray-num-cpus / --ray-num-gpus are for a local Ray)")
            return RayTaskRunner(address=address)
        init: dict[str, Any] = {"include_dashboard": False}
        if workers is not None:
            init["num_cpus"] = workers
        if num_gpus is not None:
            init["num_gpus"] = num_gpus
        return RayTaskRunner(init_kwargs=init)
    raise ValueError(f"unknown task runner {kind!r}; known: {', '.join(RUNNERS)}")


def check_shared_storage(config: Path) -> None:
    """Refuse, in one line, a config whose workdir or cache is a path relative to the
    config's folder when the run goes to a Ray cluster: each node would resolve it on
    its own disk. An absolute path (on storage every node mounts at that path) or an
    fsspec URL is taken as shared."""
    import yaml

    data = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    for field, default in (("workdir", ".textme"), ("cache", None)):
        value = data.get(field, default)
        if field == "cache" and value is None:
            continue  # ${workdir}/cache: shared when the workdir is
        value = str(value)
        if "://" in value or value.startswith(("/", "~", "${workdir}")):
            continue  # a URL, an absolute path, or under the workdir (checked itself)
        raise ValueError(f"{config}: {field}: {value!r} is relative to the config's folder, but with "
                         f"--ray-address every Ray node needs the same {field}: give an absolute path on "
                         f"storage all nodes mount (or an fsspec URL such as s3://bucket/textme-cache)")
