"""What every stage task shares: Prefect options, the run id, logging, manifests, stores.

Prefect options (STYLE.md, "Prefect 3 caching: known pitfalls"):

- every cached task gets an explicit cache policy, `checked(<key fn from tasks/keys.py>)`
  (tasks/cache_policy.py: the key without any run id, and a record whose outputs are
  missing or damaged is a miss), and `persist_result=True`; result storage is bound per run to
  `<workdir>/prefect/results` by `with_workspace` (the workdir is only known from the
  config, so it cannot be fixed at import time);
- `retries` cover transient failures only: `transient_only` refuses to retry errors
  that a retry cannot fix (bad config, bad input file, unknown encoder), so those fail
  at once with their one-line message;
- stages that run an encoder or train take a slot of the Prefect global concurrency
  limit `gpu` (`prefect gcl create gpu --limit 1`) only around their real GPU work,
  after the cache has said what is missing (tasks/gpu.py): a cached stage never waits.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from tasks.config import PipelineConfig
from tasks.failures import name_failure
from tasks.workspace import Workspace, atomic_write_text, read_json

__all__ = [
    "STAGE_OPTIONS",
    "GPU_STAGE_OPTIONS",
    "PERMANENT_ERRORS",
    "transient_only",
    "with_workspace",
    "current_run_id",
    "logger",
    "now",
    "write_manifest",
    "read_manifest",
    "read_manifest_file",
    "open_cache",
    "open_tables",
]

def _permanent_errors() -> tuple[type[BaseException], ...]:
    from storage.errors import DamagedSegmentError

    # A damaged cache segment stays damaged until `textme cache verify --quarantine`.
    errors: list[type[BaseException]] = [ValueError, TypeError, LookupError, FileNotFoundError, NotImplementedError,
                                         DamagedSegmentError]
    try:
        from textme.encoders.errors import EncoderError

        errors.append(EncoderError)  # unknown name, bad item, weights unavailable
    except Exception:  # pragma: no cover - textme always present in the product
        pass
    return tuple(errors)


#: Errors a retry cannot fix: a bad config, input file or encoder name, a damaged cache
#: segment. (Our own ConfigError / SourceError / InputError are ValueErrors.)
PERMANENT_ERRORS = _permanent_errors()


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry unless the failure is a PERMANENT_ERRORS one."""
    exc = getattr(state, "data", None)
    if not isinstance(exc, BaseException):
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as err:  # reading the result can itself fail
            exc = err
    return not isinstance(exc, PERMANENT_ERRORS)


#: Options of every cached stage task (cache_policy is added per task). `on_failure`
#: names the task run on its exception, so the flow reports the stage that failed
#: (tasks/failures.py).
STAGE_OPTIONS: dict[str, Any] = {
    "persist_result": True,
    "retries": 2,
    "retry_delay_seconds": [2, 10],
    "retry_condition_fn": transient_only,
    "on_failure": [name_failure],
}
#: GPU stages: no tag a concurrency limit could hold them by (a tag limit makes every
#: cached task queue for the slot); they take `tasks.gpu.gpu_slot()` inside instead.
GPU_STAGE_OPTIONS: dict[str, Any] = dict(STAGE_OPTIONS)


def with_workspace(task: Any, ws: Workspace) -> Any:
    """The task with its result storage (and so its cache records) under the workdir."""
    return task.with_options(result_storage=ws.prefect_results)


def current_run_id() -> str:
    """The Prefect flow run id, or a fresh local id when called outside any flow."""
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.id
    except Exception:
        run_id = None
    return str(run_id) if run_id else f"local-{uuid.uuid4()}"


def logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a run (shows in the UI), the module logger outside."""
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:
        return logging.getLogger("textme.tasks")


def now() -> datetime:
    return datetime.now(timezone.utc)


def write_manifest(ws: Workspace, key: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Store a stage's output manifest as manifests/<key>.json and return it (with key and
    its own sha256, `manifest_sha256`: tasks/integrity.py)."""
    import json

    from tasks.integrity import seal

    out = seal({"key": key, **manifest})
    atomic_write_text(ws.manifest(key), json.dumps(out, indent=1, sort_keys=True, allow_nan=False))
    return out


def read_manifest_file(path: Path) -> Any:
    """A manifest file as stored (unchecked); OSError / ValueError if unreadable."""
    return read_json(path)


def read_manifest(ws: Workspace, key: str) -> dict[str, Any] | None:
    """The stage manifest of `key`, or None when it is missing or fails its own sha256
    (a damaged manifest is never served: the stage's next run writes it again)."""
    from tasks.integrity import manifest_problem

    path = ws.manifest(key)
    try:
        manifest = read_manifest_file(path)
    except FileNotFoundError:
        return None
    except ValueError:
        manifest = None
    problem = manifest_problem(manifest)
    if problem is not None:
        logger().warning("%s: %s; treated as missing (the stage's next run writes it again)", path, problem)
        return None
    return manifest


def open_cache(cfg: PipelineConfig):
    from storage.cache import EmbeddingCache

    return EmbeddingCache(cfg.cache)


def open_tables(cfg: PipelineConfig):
    from storage.tables import TableStore

    return TableStore(Workspace.of(cfg).tables)


def ensure_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
