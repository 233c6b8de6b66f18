"""Refresh: re-run the pipeline when a caption source changed.

Fingerprints every caption source (local: file bytes; hub: the file's etag and commit)
and compares with what the last successful refresh *of this config* saw
(tasks/refresh_check.py: <workdir>/refresh/<config fingerprint>.json). Keyed by the
config's content, not by its dataset names: two configs sharing a workdir and dataset
names but reading other files (or training differently) each keep their own record, so
neither makes the other re-run; an edited config is a new one, and its first refresh
runs the pipeline. When nothing changed (and not `force`), the check is recorded and
logged ("no source changed since <time>; nothing to run") and the flow ends without
starting the pipeline. When something changed (or `force`), the pipeline runs as a
subflow: unchanged stages are cache hits and only new or edited captions are embedded.
The fingerprints are recorded only after the pipeline succeeded, so a failed refresh is
retried next time. Scheduled in prefect.yaml; `textme refresh` makes the same check
before starting this flow, and starts nothing when nothing changed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.pipeline import pipeline
from tasks.common import logger
from tasks.config import load_config
from tasks.failures import name_failure
from tasks.refresh_check import check_sources, current_sources, record_check, record_sources

__all__ = ["refresh", "fingerprint_sources"]


@task(name="fingerprint-sources", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[5, 30],
      on_failure=[name_failure])
def fingerprint_sources(config: str) -> dict[str, Any]:
    """{dataset: source fingerprint} of every dataset the pipeline ingests."""
    return current_sources(load_config(config))


@flow(name="textme-refresh", log_prints=True)
def refresh(config: str, force: bool = False) -> dict[str, Any]:
    """Re-run the pipeline if any caption source changed since the last refresh."""
    cfg = load_config(config)
    check = check_sources(cfg, fingerprint_sources(config))
    if not check.changed and not force:
        record_check(cfg, check)
        logger().info(check.nothing_to_run())
        return {"changed": [], "ran": False}
    logger().info("refresh %s: %s", cfg.name, check.why if check.changed else "forced")
    summary = pipeline(config)
    record_sources(check)
    return {"changed": check.changed, "ran": True, "pipeline": summary}


if __name__ == "__main__":  # python -m flows.refresh CONFIG
    import sys

    refresh(sys.argv[1])
