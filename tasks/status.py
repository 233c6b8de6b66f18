"""What `textme status` and `textme cache gc` report, as plain data (no printing here).

Nothing here loads a model: stage keys come from encoder identities (tasks/plan.py),
vector counts from the cache's namespace listing, run history from the `runs` table.
"""

from __future__ import annotations

from typing import Any

from tasks import keys
from tasks.common import open_cache, open_tables
from tasks.config import PipelineConfig
from tasks.plan import replay
from tasks.workspace import Workspace

__all__ = ["collect_status", "config_namespaces", "index_namespaces", "collect_gc"]


def config_namespaces(cfg: PipelineConfig) -> list[dict[str, str]]:
    """Every (encoder, tower) the config embeds with, and its namespace id."""
    out = []
    towers = [("pivot", "text"), ("pivot", "query")] + [
        (e, t) for e in cfg.encoders for t in ("text", "modal") if t in keys.encoder_of(cfg, e).towers
    ]
    for encoder, tower in towers:
        out.append({"encoder": encoder, "tower": tower,
                    "id": keys.namespace_id(keys.encoder_identity(cfg, encoder, tower))})
    return out


def index_namespaces(cfg: PipelineConfig) -> set[str]:
    """The namespaces of the config's current search indexes (their ids come from the
    heads they were projected through, so from the stage manifests, not the config)."""
    return {st.manifest["namespace"] for st in replay(cfg).index.values() if st.manifest is not None}


def _runs(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """Run history with each run's real status (a dead `running` run shows `crashed`)."""
    from tasks.runs import list_runs

    try:
        return list_runs(open_tables(cfg))
    except Exception:  # no runs yet
        return []


def collect_status(cfg: PipelineConfig) -> dict[str, Any]:
    rep = replay(cfg)
    infos = {info.id: info for info in open_cache(cfg).namespaces()} if _cache_exists(cfg) else {}
    namespaces = []
    for ns in config_namespaces(cfg):
        info = infos.get(ns["id"])
        namespaces.append({**ns, "count": info.count if info else 0, "dim": info.dim if info else None,
                           "exists": info is not None})
    return {
        "config": cfg.path,
        "name": cfg.name,
        "workdir": cfg.workdir,
        "cache": cfg.cache,
        "stages": [st.as_dict() for st in rep.stages],
        "summary": {s: sum(st.status == s for st in rep.stages) for s in ("cached", "stale", "missing")},
        "namespaces": namespaces,
        "runs": _runs(cfg),
    }


def _cache_exists(cfg: PipelineConfig) -> bool:
    if "://" in cfg.cache:
        return True
    from pathlib import Path

    return Path(cfg.cache).exists()


def collect_gc(cfgs: list[PipelineConfig], *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Remove namespaces none of the configs (sharing a cache) uses; return what went.

    Embed-stage manifests and Prefect records that point at a removed namespace go too,
    so a later run recomputes those vectors instead of trusting a record of them.
    """
    by_cache: dict[str, list[PipelineConfig]] = {}
    for cfg in cfgs:
        by_cache.setdefault(cfg.cache, []).append(cfg)
    removed_all: list[dict[str, Any]] = []
    for group in by_cache.values():
        keep = {ns["id"] for cfg in group for ns in config_namespaces(cfg)}
        keep |= {ns_id for cfg in group for ns_id in index_namespaces(cfg)}
        cache = open_cache(group[0])
        infos = {info.id: info for info in cache.namespaces()} if _cache_exists(group[0]) else {}
        removed = cache.gc(keep, dry_run=dry_run) if infos else []
        for ns_id in removed:
            info = infos.get(ns_id)
            removed_all.append({"id": ns_id, "count": info.count if info else 0,
                                "identity": info.identity if info else {}})
        if not dry_run and removed:
            for cfg in {c.workdir: c for c in group}.values():
                _forget_stage_records(Workspace.of(cfg), set(removed))
    return removed_all


def _forget_stage_records(ws: Workspace, namespaces: set[str]) -> None:
    for path, m in ws.stage_manifests():
        if m.get("stage") in ("embed", "embed_items", "index") and m.get("namespace") in namespaces:
            (ws.prefect_results / m["key"]).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
