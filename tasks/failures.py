"""Which stage failed, and why: the first failing task's own error, not a downstream PENDING.

When a stage fails, Prefect marks every stage that needed its output `NotReady` (a
PENDING state), and the flow's `.result()` on the last of them raises `UnfinishedRun:
Run is in PENDING state`, which says nothing about the cause. So the flows hand their
futures to `result_or_first_failure`: on a failure it waits for the stages still
running (their work is committed to the cache either way), then raises `StageFailed`
for the earliest stage that failed, with its task run name and its own exception.

The task run name comes from `name_failure`, an `on_failure` hook of every stage: it
writes the name onto the exception, which travels with it back to the flow whatever
the task runner (threads, Dask or Ray processes: an exception's attributes are
pickled with it). Prefect calls `on_failure` only for the final failure, after
retries, so a stage that failed once and then succeeded is never reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["StageFailed", "name_failure", "result_or_first_failure", "first_failure", "root_error",
           "describe_error"]

_ATTRIBUTE = "textme_task_run"


class StageFailed(RuntimeError):
    """A stage of a flow failed: `task_run` (its name), `error` (its own exception) and
    `also` (names of the other stages that failed)."""

    def __init__(self, task_run: str, error: BaseException, also: list[str] | None = None):
        self.task_run = task_run
        self.error = error
        self.also = list(also or [])
        super().__init__(task_run, error, self.also)

    def __str__(self) -> str:
        return self.describe()

    def describe(self, error_text: str | None = None) -> str:
        """`<task run>: <its error>` (or `error_text` in its place), then the others."""
        text = f"{self.task_run}: {describe_error(self.error) if error_text is None else error_text}"
        if self.also:
            shown = ", ".join(self.also[:3]) + (f" and {len(self.also) - 3} more" if len(self.also) > 3 else "")
            text += f" (also failed: {shown})"
        return text

    def __reduce__(self):  # picklable (Prefect persists a failed flow's exception)
        return (StageFailed, (self.task_run, self.error, self.also))


def describe_error(exc: BaseException) -> str:
    """One line: the message alone for errors written for users (they name the file,
    row or segment), `Type: message` for anything else."""
    from tasks.validate import user_errors

    from storage.errors import DamagedSegmentError

    text = " ".join(str(exc).split())
    if isinstance(exc, (*user_errors(), DamagedSegmentError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def root_error(exc: BaseException) -> BaseException:
    """The stage's own exception behind a `StageFailed` (nested flows: refresh -> pipeline)."""
    while isinstance(exc, StageFailed):
        exc = exc.error
    return exc


def name_failure(task: Any, task_run: Any, state: Any) -> None:
    """Prefect `on_failure` hook: write the task run's name onto its exception."""
    exc = _exception(state)
    if isinstance(exc, BaseException) and not hasattr(exc, _ATTRIBUTE):
        try:
            setattr(exc, _ATTRIBUTE, task_run.name)
        except (AttributeError, TypeError):  # an exception type with __slots__
            pass


def _exception(state: Any) -> Any:
    try:
        return state.result(raise_on_failure=False)
    except Exception as err:  # a result that cannot be read back: say so, not crash
        return err


def _task_run_name(future: Any, exc: BaseException) -> str:
    name = getattr(exc, _ATTRIBUTE, None)
    if name:
        return str(name)
    try:  # no hook ran (a task without it): ask the API
        from prefect import get_client

        with get_client(sync_client=True) as client:
            return client.read_task_run(future.task_run_id).name
    except Exception:
        return f"task run {future.task_run_id}"


def _flatten(futures: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for f in futures:
        if f is None:
            continue
        if isinstance(f, (list, tuple)):
            out.extend(_flatten(f))
        elif isinstance(f, dict):
            out.extend(_flatten(f.values()))
        else:
            out.append(f)
    return out


def first_failure(futures: Iterable[Any]) -> StageFailed | None:
    """`StageFailed` for the earliest failed (or crashed) of the finished `futures`, or
    None when none failed. Futures may be nested in lists, tuples and dicts."""
    failed = []
    for future in _flatten(futures):
        state = future.state
        if state.is_failed() or state.is_crashed():
            failed.append((state.timestamp, future, state))
    if not failed:
        return None
    failed.sort(key=lambda item: item[0])
    named = []
    for _, future, state in failed:
        exc = _exception(state)
        if not isinstance(exc, BaseException):
            exc = RuntimeError(state.message or state.name)
        named.append((_task_run_name(future, exc), exc))
    (name, exc), others = named[0], [n for n, _ in named[1:]]
    return StageFailed(name, exc, others)


def result_or_first_failure(final: Any, upstream: Iterable[Any]) -> Any:
    """`final.result()`; when it fails, wait for every upstream future and raise
    `StageFailed` for the first stage that failed (or the original error if none did)."""
    from prefect.futures import wait

    try:
        return final.result()
    except Exception:
        everything = [*_flatten(upstream), final]
        wait(everything)
        failure = first_failure(everything)
        if failure is None:
            raise
        raise failure from failure.error  # the log's traceback is the stage's own
