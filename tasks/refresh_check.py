"""Has a config's caption source changed since its last refresh? Answered without Prefect.

What the last successful refresh of a config saw is kept in
`<workdir>/refresh/<config fingerprint>.json`: `{"recorded_at": ISO time, "sources":
{dataset: source fingerprint}}` (a file holding only the `{dataset: fingerprint}` map,
as written before, is read too, its time taken from the file). Every check that finds
nothing changed writes `<workdir>/refresh/<config fingerprint>.checked.json` (when, and
that nothing ran): a separate file, so a check never rewrites what a refresh recorded.

No Prefect and no model library here: `textme refresh` asks this first, and a refresh
that finds nothing changed ends before any flow starts (flows/refresh.py asks the same
inside a scheduled run).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.config import PipelineConfig
from tasks.keys import config_fingerprint
from tasks.workspace import Workspace, atomic_write_text, read_json

__all__ = ["SourceCheck", "current_sources", "check_sources", "record_sources", "record_check"]


@dataclass(frozen=True)
class SourceCheck:
    """The sources now against those the config's last successful refresh recorded."""

    config_name: str
    config_fp: str
    state_path: Path
    current: dict[str, Any]  # {dataset: source fingerprint}, now
    previous: dict[str, Any]  # as recorded ({} before the first refresh of this config)
    recorded_at: str | None  # when they were recorded (ISO 8601, UTC)

    @property
    def changed(self) -> list[str]:
        return sorted(name for name, fp in self.current.items() if self.previous.get(name) != fp)

    @property
    def why(self) -> str:
        """Why a refresh runs the pipeline (when `changed` is not empty)."""
        if not self.previous:
            return f"first refresh of this config ({self.config_fp[:12]})"
        return f"sources changed: {', '.join(self.changed)}"

    def nothing_to_run(self) -> str:
        return f"refresh {self.config_name}: no source changed since {self.recorded_at}; nothing to run"


def current_sources(cfg: PipelineConfig) -> dict[str, Any]:
    """{dataset: source fingerprint} of every dataset the pipeline ingests."""
    from tasks.sources import source_fingerprint
    from tasks.validate import used_datasets

    return {name: source_fingerprint(cfg.datasets[name]) for name in used_datasets(cfg)}


def _utc(seconds: float | None = None) -> str:
    moment = datetime.now(timezone.utc) if seconds is None else datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="seconds")


def _read_state(path: Path) -> tuple[dict[str, Any], str | None]:
    if not path.is_file():
        return {}, None
    state = read_json(path)
    if isinstance(state.get("sources"), dict):
        return state["sources"], state.get("recorded_at")
    return state, _utc(os.path.getmtime(path))  # the earlier format: the map alone


def check_sources(cfg: PipelineConfig, current: dict[str, Any] | None = None) -> SourceCheck:
    """Compare `current` (default: fingerprinted now) with the last recorded refresh."""
    config_fp = config_fingerprint(cfg)
    path = Workspace.of(cfg).refresh_state(config_fp)
    previous, recorded_at = _read_state(path)
    return SourceCheck(cfg.name, config_fp, path, current_sources(cfg) if current is None else current,
                       previous, recorded_at)


def record_sources(check: SourceCheck) -> None:
    """After a successful refresh: these are the sources its pipeline run saw."""
    state = {"recorded_at": _utc(), "sources": check.current}
    atomic_write_text(check.state_path, json.dumps(state, indent=1, sort_keys=True))


def record_check(cfg: PipelineConfig, check: SourceCheck) -> Path:
    """A check that found nothing changed and ran nothing: when it happened."""
    path = Workspace.of(cfg).refresh_checked(check.config_fp)
    atomic_write_text(path, json.dumps({"checked_at": _utc(), "changed": [], "ran": False,
                                        "sources_recorded_at": check.recorded_at}, indent=1))
    return path
