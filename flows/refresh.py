"""Refresh: re-run the pipeline when a caption source changed.

Fingerprints every caption source (local: file bytes; hub: the file's etag and commit)
and compares with what the last successful refresh *of this config* saw
(<workdir>/refresh/<config fingerprint>.json). Keyed by the config's content, not by
its dataset names: two configs sharing a workdir and dataset names but reading other
files (or training differently) each keep their own record, so neither makes the other
re-run; an edited config is a new one, and its first refresh runs the pipeline. When
something changed (or `force`), the pipeline runs as a subflow: unchanged stages are
cache hits and only new or edited captions are embedded. The fingerprints are recorded
only after the pipeline succeeded, so a failed refresh is retried next time.
Scheduled in prefect.yaml.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.pipeline import pipeline
from tasks.common import logger
from tasks.config import load_config
from tasks.failures import name_failure
from tasks.keys import config_fingerprint
from tasks.sources import source_fingerprint
from tasks.validate import used_datasets
from tasks.workspace import Workspace, atomic_write_text, read_json

__all__ = ["refresh", "fingerprint_sources", "changed_sources"]


@task(name="fingerprint-sources", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[5, 30],
      on_failure=[name_failure])
def fingerprint_sources(config: str) -> dict[str, Any]:
    """{dataset: source fingerprint} of every dataset the pipeline ingests."""
    cfg = load_config(config)
    return {name: source_fingerprint(cfg.datasets[name]) for name in used_datasets(cfg)}


def changed_sources(current: dict[str, Any], previous: dict[str, Any]) -> list[str]:
    return sorted(name for name, fp in current.items() if previous.get(name) != fp)


@flow(name="textme-refresh", log_prints=True)
def refresh(config: str, force: bool = False) -> dict[str, Any]:
    """Re-run the pipeline if any caption source changed since the last refresh."""
    cfg = load_config(config)
    config_fp = config_fingerprint(cfg)
    state_path = Workspace.of(cfg).refresh_state(config_fp)
    previous = read_json(state_path) if state_path.is_file() else {}
    current = fingerprint_sources(config)
    changed = changed_sources(current, previous)
    if not changed and not force:
        logger().info("refresh %s: no caption source changed; nothing to do", cfg.name)
        return {"changed": [], "ran": False}
    why = ("forced" if not changed else f"sources changed: {', '.join(changed)}" if previous
           else f"first refresh of this config ({config_fp[:12]})")
    logger().info("refresh %s: %s", cfg.name, why)
    summary = pipeline(config)
    atomic_write_text(state_path, json.dumps(current, indent=1, sort_keys=True))
    return {"changed": changed, "ran": True, "pipeline": summary}


if __name__ == "__main__":  # python -m flows.refresh CONFIG
    import sys

    refresh(sys.argv[1])
