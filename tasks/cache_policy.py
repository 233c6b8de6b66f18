"""The cache policy of every cached stage: Prefect's record is a hit only while what it
points to is intact.

Prefect 3 treats a task as cached when a result record exists under its cache key
(`Transaction.begin` -> `ResultStore.exists`); it never looks at the files the task
wrote. Our stages return small manifests that point at files, tables and cache
vectors, so a record can outlive them (a deleted manifest or `tables/` folder, a
quarantined cache segment, a flipped byte in a head). `CheckedOutputs.compute_key`
returns the stage key exactly like the key function it wraps (tasks/keys.py), and
before Prefect looks the key up, checks the outputs the existing record stands for
(tasks/integrity.py `stage_problems`). When any is missing or fails its checksum, the
record is deleted, so the lookup misses, the stage runs again and writes both anew
under the same key: downstream keys do not change, and the next run is all hits again.

Where Prefect calls the policy: `SyncTaskRunEngine.transaction_context` ->
`compute_transaction_key` -> `cache_policy.compute_key(task_ctx, inputs, ...)`, once
per attempt, before `transaction(key=...)` checks for the record. A key function that
raises is logged and the task runs uncached (STYLE.md), so the check never raises: any
error in it counts as "outputs not intact".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from prefect.cache_policies import CachePolicy

from tasks.common import logger

__all__ = ["CheckedOutputs", "checked", "stage_record", "drop_record_if_outputs_damaged"]


@dataclass
class CheckedOutputs(CachePolicy):
    """`key_fn(ctx, parameters)`'s key, with the record under it dropped when the
    outputs it stands for are no longer intact."""

    key_fn: Optional[Callable[[Any, Mapping[str, Any]], str]] = None

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        if self.key_fn is None:
            raise ValueError("CheckedOutputs needs a key_fn")
        key = self.key_fn(task_ctx, inputs)
        if key is None:
            raise ValueError(f"{self.key_fn.__name__} returned no key")
        drop_record_if_outputs_damaged(inputs, key)
        return key


def checked(key_fn: Callable[[Any, Mapping[str, Any]], str]) -> CheckedOutputs:
    """The policy for a stage task: `@task(cache_policy=checked(keys.train_key_fn), ...)`."""
    return CheckedOutputs(key_fn=key_fn)


def stage_record(ws: Any, key: str) -> Any:
    """The result Prefect's record under `key` holds (None: no record). Records live in
    the workdir's result storage under their cache key (tasks/common.py `with_workspace`)."""
    from prefect.results import ResultRecord

    path = ws.prefect_results / key
    if not path.is_file():
        return None
    return ResultRecord.deserialize(path.read_bytes()).result


def drop_record_if_outputs_damaged(params: Mapping[str, Any], key: str) -> bool:
    """Delete the Prefect record under `key` when its stage's outputs are not intact;
    True if it was deleted. No record: nothing to check."""
    from tasks import keys
    from tasks.integrity import stage_problems
    from tasks.workspace import Workspace

    cfg = keys.load_snapshot(params["config"])
    ws = Workspace.of(cfg)
    record = ws.prefect_results / key
    if not record.is_file():
        return False
    try:
        expected = stage_record(ws, key)
        captions = params.get("captions")
        if isinstance(captions, dict):
            captions = [captions]
        problems = [str(p) for p in stage_problems(cfg, key, expected if isinstance(expected, dict) else None,
                                                  captions or ())]
        if not isinstance(expected, dict):
            problems.insert(0, f"{record}: holds no stage manifest")
    except Exception as exc:  # noqa: BLE001 - whatever fails the check, the record is not trusted
        problems = [f"{record}: outputs could not be checked ({type(exc).__name__}: {exc})"]
    if not problems:
        return False
    logger().warning("cache record %s not used: %s%s; running the stage again", key[:32], problems[0],
                     f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    record.unlink(missing_ok=True)
    return True
