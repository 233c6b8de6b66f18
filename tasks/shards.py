"""Shards of an embed stage: where the missing inputs are encoded.

An embed stage cuts its missing keys into shards of `embedding.shard_rows` (in request
order). Each shard encodes chunk by chunk and commits its own segments
(`tasks.embed.commit_chunks`), so a killed stage resumes per shard: what a shard
committed is never encoded again.

- `LocalShards`: the shards one after another in this process, on its device (the
  thread runner; the encoder object, so its model, is loaded once per process).
- `RayShards`: the shards in parallel on Ray actors, each holding one loaded model: as
  many actors as the cluster has room for (GPUs / `num_gpus` of the encoder, or one per
  CPU for CPU workers), never more than there are shards. Ray pins
  `CUDA_VISIBLE_DEVICES` per actor, so the encoder's "cuda" is the GPU Ray gave it. A
  shard goes only to an actor that is already placed, so stages that run at once and
  compete for GPUs cannot wait on each other; the actors end with the stage, giving
  their GPUs back to the next one.

A stage uses Ray when it runs where Ray is initialised (`--runner ray`: the task runs in
a Ray worker), else locally. Actors read and write the embedding cache and the workdir's
tables themselves, so both must be on storage every Ray node sees.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

from tasks.config import PipelineConfig

__all__ = ["LocalShards", "RayShards", "shard_runner", "split", "ray_active"]


def split(n: int, rows: int) -> list[slice]:
    """`n` inputs in shards of at most `rows`, in order."""
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)]


def ray_active() -> bool:
    """True in a process connected to Ray (a Ray worker, or a driver after ray.init)."""
    if "ray" not in sys.modules:  # never import Ray just to find out
        return False
    import ray

    return ray.is_initialized()


def shard_runner(cfg: PipelineConfig, encoder: str) -> LocalShards | RayShards:
    """How the encoder's embed stage runs its shards here."""
    from tasks import keys

    rows = cfg.embedding.shard_rows
    if not ray_active():
        return LocalShards(rows)
    ref = keys.encoder_ref(cfg, encoder)
    return RayShards(rows, ref.encoder, dict(ref.options), ref.num_gpus, str(cfg.cache))


class LocalShards:
    """Shards one after another in this process."""

    def __init__(self, rows: int | None = None) -> None:
        self.rows = rows

    def run(self, ns: Any, enc: Any, tower: str, keys_: Sequence[str], inputs: Sequence[str], *, label: str,
            skip: bool, log: Any, bar: Any) -> tuple[int, list[Any]]:
        from tasks.embed import commit_chunks

        computed, bad = 0, []
        for part in split(len(keys_), self.rows or len(keys_)):
            n, b = commit_chunks(ns, enc, tower, keys_[part], inputs[part], label=label, skip=skip, log=log, bar=bar)
            computed += n
            bad.extend(b)
        return computed, bad


class RayShards:
    """Shards in parallel on a pool of Ray actors (see the module docstring)."""

    def __init__(self, rows: int, registry_name: str, options: dict[str, Any], num_gpus: float | None,
                 cache_root: str) -> None:
        self.rows, self.registry_name, self.options = rows, registry_name, options
        self.num_gpus, self.cache_root = num_gpus, cache_root

    def gpus_per_worker(self) -> float:
        import ray

        if self.num_gpus is not None:
            return float(self.num_gpus)
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def pool_size(self, n_shards: int) -> int:
        import ray

        resources = ray.cluster_resources()
        gpus = self.gpus_per_worker()
        room = int(resources.get("GPU", 0) / gpus + 1e-9) if gpus else int(resources.get("CPU", 1))
        if gpus and room == 0:
            raise ValueError(f"num_gpus: {gpus:g} per embedding worker, but the Ray cluster has "
                             f"{resources.get('GPU', 0):g} GPUs (set the encoder's num_gpus, or --ray-num-gpus)")
        return max(1, min(room, n_shards))

    def run(self, ns: Any, enc: Any, tower: str, keys_: Sequence[str], inputs: Sequence[str], *, label: str,
            skip: bool, log: Any, bar: Any) -> tuple[int, list[Any]]:
        import ray

        from tasks.common import logger

        shards = split(len(keys_), self.rows)
        gpus = self.gpus_per_worker()
        worker = ray.remote(ShardWorker).options(num_gpus=gpus, num_cpus=0)
        actors = [worker.remote(self.registry_name, self.options, ns.id, self.cache_root, one_thread=not gpus)
                  for _ in range(self.pool_size(len(shards)))]
        say = logger()
        todo = list(reversed(shards))
        ready = {a.device.remote(): a for a in actors}  # resolves once the actor is placed
        running: dict[Any, tuple[Any, slice]] = {}
        computed, bad = 0, []
        try:
            while todo or running:
                waiting = list(running) + (list(ready) if todo else [])
                [ref], _ = ray.wait(waiting, num_returns=1)
                if ref in ready:
                    actor = ready.pop(ref)
                    _get(ref)  # the actor could not start: raised here
                else:
                    actor, part = running.pop(ref)
                    n, b, device = _get(ref)
                    computed += n
                    bad.extend(b)
                    bar.advance(part.stop - part.start)
                    say.info("embed %s: shard of %d committed on %s (%d/%d)", label, part.stop - part.start,
                             device, bar.done, bar.total)
                if todo:
                    part = todo.pop()
                    running[actor.fill.remote(tower, list(keys_[part]), list(inputs[part]), label, skip, log)] = (
                        actor, part)
        finally:
            for a in actors:  # their GPUs go back to Ray for the next stage
                ray.kill(a)
        return computed, bad


def _get(ref: Any) -> Any:
    """ray.get, raising a task's own error (one line) rather than Ray's wrapper."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise


class ShardWorker:
    """A Ray actor: one encoder loaded once, encoding and committing the shards it is given."""

    def __init__(self, registry_name: str, options: dict[str, Any], namespace: str, cache_root: str, *,
                 one_thread: bool) -> None:
        from storage.cache import EmbeddingCache
        from tasks import keys

        if one_thread:  # CPU workers: one per core, one torch thread each
            import torch

            torch.set_num_threads(1)
        self.enc = keys.build_encoder(registry_name, options)
        self.ns = EmbeddingCache(cache_root).open_namespace(namespace)

    def device(self) -> str:
        """"gpu:<id>" for the GPU Ray assigned (on its node), else the encoder's device."""
        import ray

        ids = ray.get_runtime_context().get_accelerator_ids().get("GPU") or []
        if ids:
            return "gpu:" + ",".join(str(i) for i in ids)
        from tasks.gpu import device_of

        return device_of(self.enc)

    def fill(self, tower: str, keys_: list[str], inputs: list[str], label: str, skip: bool,
             log: Any) -> tuple[int, list[Any], str]:
        from tasks.embed import commit_chunks

        device = self.device()
        n, bad = commit_chunks(self.ns, self.enc, tower, keys_, inputs, label=label, skip=skip, log=log,
                               device=device)
        return n, bad, device
