"""What `textme verify CONFIG` reports: every artifact a result of the config depends on.

- each stage of the config's DAG that has run (a manifest or a Prefect record under its
  current key): its manifest, the files it lists (heads, offsets, item samples), its
  table part and its cache vectors (tasks/integrity.py `stage_problems`);
- every part of every table (storage/parts.py checksums; files no manifest lists);
- every segment of every cache namespace (storage/segments.py checksums).

Reads every byte once and changes nothing. One `Problem` per damaged or missing
artifact, each with the command that repairs it.
"""

from __future__ import annotations

from tasks.common import open_cache, open_tables
from tasks.config import PipelineConfig
from tasks.integrity import Problem, stage_problems
from tasks.workspace import Workspace

__all__ = ["verify_all"]

#: Tables whose parts a cached stage owns: its next run writes a damaged one again.
_STAGE_TABLES = ("captions", "offsets", "training")


def _stages(cfg: PipelineConfig) -> list[Problem]:
    from tasks.cache_policy import stage_record
    from tasks.plan import replay

    ws = Workspace.of(cfg)
    rep = replay(cfg)
    captions: list[dict] = []  # intact caption snapshots (ingest comes first in DAG order)
    out: list[Problem] = []
    for st in rep.stages:
        if st.key is None:
            continue  # an upstream stage is missing: nothing of this one can be checked
        has_record = (ws.prefect_results / st.key).is_file()
        if not has_record and not ws.manifest(st.key).exists():
            continue  # never run under this key: `textme status` says missing, nothing is damaged
        try:
            expected = stage_record(ws, st.key)
        except Exception as exc:  # noqa: BLE001 - an unreadable record is one of the problems
            out.append(Problem(str(ws.prefect_results / st.key), f"unreadable ({type(exc).__name__})",
                               f"the next `textme run {cfg.path}` runs stage {st.stage} {st.unit} again"))
            continue
        try:
            found = stage_problems(cfg, st.key, expected if isinstance(expected, dict) else None, captions)
            if st.stage == "ingest" and not found and st.manifest is not None:
                captions.append(st.manifest)  # an embed stage of a damaged snapshot is not checked: its ingest is named
            out += found
        except Exception as exc:  # noqa: BLE001 - e.g. its captions are gone (reported for ingest)
            out.append(Problem(str(ws.manifest(st.key)), f"outputs could not be checked ({str(exc).splitlines()[0]})",
                               f"the next `textme run {cfg.path}` runs stage {st.stage} {st.unit} again"))
    return out


def _tables(cfg: PipelineConfig) -> list[Problem]:
    ws = Workspace.of(cfg)
    out = []
    for report in open_tables(cfg).verify():
        for p in report.problems:
            if p.kind == "unlisted":
                repair = "no table manifest lists it, so no read uses it; delete it"
            elif report.table in _STAGE_TABLES:
                repair = f"left out of every read; the next `textme run {cfg.path}` writes its stage's part again"
            else:
                repair = "left out of every read (its rows are lost); delete it and its manifest entry"
            out.append(Problem(str(ws.tables / p.file), f"{p.kind} ({p.detail})", repair))
    return out


def _cache(cfg: PipelineConfig) -> list[Problem]:
    from pathlib import Path

    if "://" not in cfg.cache and not Path(cfg.cache).exists():
        return []
    out = []
    for report in open_cache(cfg).verify():
        for bad in report.bad:
            out.append(Problem(f"{cfg.cache}/namespaces/{report.namespace}/segments/{bad.segment_id}",
                               "; ".join(bad.problems),
                               f"drop it with `textme cache verify --quarantine {cfg.path}`, then `textme run "
                               f"{cfg.path}` recomputes its vectors"))
    return out


def verify_all(cfg: PipelineConfig) -> list[Problem]:
    """Every problem found in the config's stages, tables and cache (empty: all intact)."""
    return _stages(cfg) + _tables(cfg) + _cache(cfg)
