"""Progress of long stages: rich bars in a terminal, progress artifacts under Prefect.

    with stage_progress("embed clip/modal", total=len(missing), unit="items") as bar:
        for chunk in chunks:
            ...
            bar.advance(len(chunk))

- In a terminal (stderr is a TTY), each running stage gets a bar: done/total, rate,
  time left, and fields the stage sets (training: its loss). Bars of stages running at
  once share one live display, drawn through the console Prefect logs to, so log lines
  print above the bars instead of through them. A bar disappears when its stage ends;
  the stage's log lines are the record.
- Under Prefect, a stage that runs for more than `ARTIFACT_AFTER_S` seconds (or says it
  will be long) gets a progress artifact (the run's Artifacts tab), updated at most every
  `ARTIFACT_EVERY_S` seconds and set to 100 when the stage ends. Short stages, all of the
  demo's, create none: their cost is a clock read per update.
- Log lines are the stages' own and stay as they are (files, CI, workers).

`TEXTME_PROGRESS=0` switches bars and artifacts off; `TEXTME_PROGRESS=1` shows bars
even when stderr is not a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

__all__ = ["stage_progress", "StageProgress", "ARTIFACT_AFTER_S", "ARTIFACT_EVERY_S"]

ARTIFACT_AFTER_S = 2.0
ARTIFACT_EVERY_S = 2.0


def _mode() -> str:
    value = os.environ.get("TEXTME_PROGRESS", "").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    if value in ("1", "on", "true", "yes"):
        return "on"
    return "auto"


def _bars_wanted() -> bool:
    mode = _mode()
    if mode == "auto":
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):  # a replaced or closed stream
            return False
    return mode == "on"


def _in_task_run() -> bool:
    try:
        from prefect.context import TaskRunContext

        return TaskRunContext.get() is not None
    except Exception:
        return False


class StageProgress:
    """One stage's progress; see the module docstring. Use `stage_progress(...)`."""

    def __init__(self, label: str, total: int, unit: str, *, long: bool = False, **fields: Any) -> None:
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self.done = 0
        self.fields: dict[str, Any] = dict(fields)
        self.started = time.perf_counter()
        shown = self.total > 0 and _mode() != "off"  # nothing to do: no bar, no artifact
        self._bar = _BARS.add(label, self.total, unit) if shown and _bars_wanted() else None
        self._prefect = shown and _in_task_run()
        self._artifact: Any = None
        self._artifact_at = 0.0
        if self._prefect and long:
            self._publish(force=True)

    # ---- what stages call ------------------------------------------------------------
    def advance(self, n: int = 1, **fields: Any) -> None:
        self.update(self.done + n, **fields)

    def update(self, done: int | None = None, **fields: Any) -> None:
        if done is not None:
            self.done = min(int(done), self.total) if self.total else int(done)
        self.fields.update(fields)
        if self._bar is not None:
            _BARS.update(self._bar, self.done, self._extra())
        if self._prefect:
            self._publish()

    def close(self, *, completed: bool = True) -> None:
        if self._bar is not None:
            _BARS.remove(self._bar)
            self._bar = None
        if self._prefect and self._artifact is not None and completed:
            self.done = self.total
            self._publish(force=True)

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(completed=exc_type is None)

    # ---- rendering -------------------------------------------------------------------
    def _extra(self) -> str:
        return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in self.fields.items())

    def describe(self) -> str:
        """`embed clip/modal: 3000/5000 items, 250 items/s, ~8s left (loss 0.1234)`."""
        elapsed = time.perf_counter() - self.started
        text = f"{self.label}: {self.done}/{self.total} {self.unit}"
        if self.done and elapsed > 0:
            rate = self.done / elapsed
            text += f", {rate:.3g} {self.unit}/s"
            if self.total > self.done:
                text += f", ~{(self.total - self.done) / rate:.0f}s left"
        extra = self._extra()
        return f"{text} ({extra})" if extra else text

    def _publish(self, force: bool = False) -> None:
        """Create (once the stage has run long enough) or update its progress artifact."""
        now = time.perf_counter()
        if not force and (now - self.started < ARTIFACT_AFTER_S or now - self._artifact_at < ARTIFACT_EVERY_S):
            return
        percent = 100.0 * self.done / self.total if self.total else 100.0
        try:
            from prefect.artifacts import create_progress_artifact, update_progress_artifact

            if self._artifact is None:
                self._artifact = create_progress_artifact(progress=percent, description=self.describe())
            else:
                update_progress_artifact(self._artifact, progress=percent, description=self.describe())
        except Exception as err:  # a view, never a reason to fail a stage
            logging.getLogger(__name__).debug("progress artifact for %s: %s", self.label, err)
            self._prefect = False
        self._artifact_at = now


def stage_progress(label: str, total: int, unit: str = "items", *, long: bool = False,
                   **fields: Any) -> StageProgress:
    """Progress of one stage of `total` `unit`s (`long`: create its artifact at once)."""
    return StageProgress(label, total, unit, long=long, **fields)


# --------------------------------------------------------------------------- terminal bars


def _console():
    """The console Prefect logs to (so log lines print above the bars), else stderr's.

    Prefect's console has a theme of its own, without rich's progress styles: those are
    pushed onto it (they style nothing else)."""
    from rich.console import Console
    from rich.default_styles import DEFAULT_STYLES
    from rich.theme import Theme

    for name in ("prefect", ""):
        for handler in logging.getLogger(name).handlers:
            console = getattr(handler, "console", None)
            if isinstance(console, Console):
                if not getattr(console, "_textme_progress_styles", False):
                    console.push_theme(Theme({k: v for k, v in DEFAULT_STYLES.items()
                                              if k.startswith(("bar.", "progress."))}))
                    console._textme_progress_styles = True
                return console
    return Console(stderr=True)


class _Bars:
    """One live display for the bars of every stage running in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: Any = None

    def add(self, label: str, total: int, unit: str) -> int:
        with self._lock:
            if self._progress is None:
                self._progress = self._start()
            return self._progress.add_task(label, total=total, unit=unit, extra="")

    def update(self, task_id: int, done: int, extra: str) -> None:
        progress = self._progress
        if progress is not None:
            progress.update(task_id, completed=done, extra=extra)

    def remove(self, task_id: int) -> None:
        with self._lock:
            if self._progress is None:
                return
            self._progress.remove_task(task_id)
            if not self._progress.tasks:
                self._progress.stop()
                self._progress = None

    @staticmethod
    def _start():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, \
            TimeRemainingColumn
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:,.1f} {task.fields['unit']}/s" if speed else "", style="progress.data.speed")

        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"), Rate(), TimeRemainingColumn(), TextColumn("{task.fields[extra]}"),
            console=_console(), transient=True,
        )
        progress.start()
        return progress


_BARS = _Bars()
