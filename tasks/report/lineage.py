"""What one run used, read from the tables alone: its results, offsets and heads.

The tables link a run to the offsets and heads it used in two ways:

- exactly, through its `results` rows: every textme/uncentred row names the heads
  (`projection_fp`, comma-joined for an emergent pair) and offsets (`offset_fp`) behind
  it; `training` rows map a head's fingerprint to its encoder and variant;
- for an encoder no evaluation used (its heads feed `textme search` only), through the
  `offsets` and `training` rows of the same encoder identity: the ones this run computed,
  else the newest a run that started no later than this one computed (a cached stage
  writes no new row). The encoder's text/modal namespaces come from the run's config
  snapshot, and a head's own metadata says which namespace and offset it was trained
  with, so a head of another config's same-named encoder is never picked.

So a report regenerated later (`textme report`) shows what the run showed, without
running anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks import keys
from tasks.common import open_tables
from tasks.config import PipelineConfig
from tasks.workspace import Workspace

__all__ = ["NothingToReport", "HeadRef", "RunLineage", "latest_run_id", "load_lineage"]

_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


class NothingToReport(LookupError):
    """No run with results in this workdir (or not the run asked for)."""


@dataclass
class HeadRef:
    encoder: str
    variant: str  # textme | uncentred
    projection_fp: str
    path: str
    history: list[dict[str, Any]]  # training rows of this head, by epoch


@dataclass
class RunLineage:
    run: dict[str, Any]  # the run's latest `runs` row (status, started/finished, config_fp, ...)
    cfg: PipelineConfig  # where things are: workdir, cache (the config given)
    snapshot: PipelineConfig  # what the run did: its config snapshot (the given config when it is gone)
    results: list[dict[str, Any]]
    offsets: dict[str, dict[str, Any]]  # encoder -> `offsets` row
    heads: dict[tuple[str, str], HeadRef]  # (encoder, variant) -> head
    encoders: list[str]  # in config order, then any other the results name
    notes: list[str] = field(default_factory=list)  # what could not be found, said on the page

    @property
    def run_id(self) -> str:
        return self.run["run_id"]

    @property
    def stand_in(self) -> bool:
        return any(r["stand_in"] for r in self.results) or bool(self.run.get("stand_in"))


def _runs(tables: Any) -> dict[str, dict[str, Any]]:
    """run_id -> its latest row (a finished row wins over the started one)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in tables.read("runs").to_pylist():
        seen = latest.get(row["run_id"])
        if seen is None or (row["finished_at"] is not None, row["finished_at"] or _EPOCH) >= (
                seen["finished_at"] is not None, seen["finished_at"] or _EPOCH):
            latest[row["run_id"]] = row
    return latest


def latest_run_id(cfg: PipelineConfig) -> str:
    """The newest run (by start) with results rows: of this config's name if it has one."""
    tables = open_tables(cfg)
    with_results = set(tables.read("results").column("run_id").to_pylist())
    runs = [r for r in _runs(tables).values() if r["run_id"] in with_results]
    if not runs:
        where = Workspace.of(cfg).tables
        raise NothingToReport(f"{cfg.name}: nothing to report yet: no run with results in {where} "
                              f"(run `textme run` first)")
    own = [r for r in runs if r["config_name"] == cfg.name] or runs
    return max(own, key=lambda r: r["started_at"])["run_id"]


def _snapshot(cfg: PipelineConfig, config_fp: str | None) -> PipelineConfig:
    path = Workspace.of(cfg).config_snapshot(config_fp) if config_fp else None
    if path is not None and path.is_file():
        return keys.load_snapshot(str(path))
    return cfg


def _split(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


def load_lineage(cfg: PipelineConfig, run_id: str) -> RunLineage:
    """Everything the report of `run_id` draws, located through the tables."""
    tables = open_tables(cfg)
    runs = _runs(tables)
    # Its own part first (store_results names it by the run): a report reads what its
    # run wrote, not every run's rows; a whole read only for rows written under another name.
    results = ([r for r in tables.read_part("results", run_id).to_pylist() if r["run_id"] == run_id]
               or tables.read("results", filters={"run_id": run_id}).to_pylist())
    if run_id not in runs and not results:
        known = sorted(runs.values(), key=lambda r: r["started_at"])[-3:]
        hint = f"; latest: {', '.join(r['run_id'] for r in known)}" if known else ""
        raise NothingToReport(f"{cfg.name}: no run {run_id!r} in {Workspace.of(cfg).tables}{hint}")
    run = runs.get(run_id) or {"run_id": run_id, "flow": None, "config_name": cfg.name,
                               "config_fp": results[0]["config_fp"], "code_version": results[0]["code_version"],
                               "started_at": None, "finished_at": None, "status": "unknown", "stand_in": None}
    snap = _snapshot(cfg, run.get("config_fp"))
    ws = Workspace.of(cfg)  # not the snapshot's: a workdir that moved is still read where it is now
    evals = {spec.name: i for i, spec in enumerate(snap.evaluation)}
    results.sort(key=lambda r: evals.get(r["eval_name"], len(evals)))  # stable: rows keep their order

    training = tables.read("training").to_pylist()
    by_head: dict[str, list[dict[str, Any]]] = {}
    for row in training:
        if row["projection_fp"]:
            by_head.setdefault(row["projection_fp"], []).append(row)
    offsets_rows = tables.read("offsets").to_pylist()
    offsets_by_fp = {r["offset_fp"]: r for r in offsets_rows}

    def started(rid: str) -> datetime:
        r = runs.get(rid)
        return r["started_at"] if r and r["started_at"] else _EPOCH

    this_start = started(run_id) if run_id in runs else datetime.max.replace(tzinfo=timezone.utc)

    def rank(rid: str) -> tuple[bool, datetime]:
        """Order of preference among candidate rows: this run's, then the newest before it."""
        return (rid == run_id, started(rid))

    def eligible(rid: str) -> bool:
        return rid == run_id or started(rid) <= this_start

    heads: dict[tuple[str, str], HeadRef] = {}

    def add_head(fp: str) -> None:
        rows = sorted(by_head.get(fp, []), key=lambda r: r["epoch"])
        if not rows:
            return
        enc, variant = rows[0]["encoder"], rows[0]["variant"] or "textme"
        heads.setdefault((enc, variant), HeadRef(enc, variant, fp, str(ws.projection(fp)), rows))

    offsets: dict[str, dict[str, Any]] = {}
    for r in results:  # exact: what the evaluations used
        for fp in _split(r["projection_fp"]):
            add_head(fp)
        for fp in _split(r["offset_fp"]):
            row = offsets_by_fp.get(fp)
            if row is not None:
                offsets.setdefault(row["encoder"], row)

    # Config order is lost in the snapshot (sorted keys): evaluated encoders first, in
    # evaluation order, then the others.
    named = [e for spec in snap.evaluation for e in spec.encoders()]
    encoders = list(dict.fromkeys([*named, *snap.encoders, *sorted({e for e, _ in heads} | set(offsets))]))
    variants = ("textme", "uncentred") if snap.training.ablate_centring else ("textme",)
    notes: list[str] = []
    for enc in encoders:
        if enc not in snap.encoders:
            continue
        entry = snap.encoders[enc]
        if not entry.own_offsets:  # train: false with released offsets: none of ours (and maybe no modal tower)
            continue
        if enc not in offsets:
            ns_modal = _namespace(snap, enc, "modal")
            found = [r for r in offsets_rows if r["encoder"] == enc and r["identity_fp"] == ns_modal
                     and eligible(r["run_id"])]
            if found:
                offsets[enc] = max(found, key=lambda r: rank(r["run_id"]))
            else:
                notes.append(f"{enc}: no offsets recorded for this run")
        for variant in variants if entry.train else ():
            if (enc, variant) in heads:
                continue
            fp = _find_head(snap, ws, enc, variant, offsets.get(enc), by_head, eligible, rank)
            if fp:
                add_head(fp)
            else:
                notes.append(f"{enc}: no {variant} head recorded for this run")
    return RunLineage(run=run, cfg=cfg, snapshot=snap, results=results, offsets=offsets, heads=heads,
                      encoders=encoders, notes=notes)


def _namespace(cfg: PipelineConfig, encoder: str, tower: str) -> str:
    return keys.namespace_id(keys.encoder_identity(cfg, encoder, tower))


def _intact(cfg: PipelineConfig, ws: Workspace, fp: str) -> bool:
    """Whether the head of train stage `fp` passes the sha256 its manifest recorded."""
    from tasks.common import read_manifest
    from tasks.integrity import IntegrityError, checked_head

    manifest = read_manifest(ws, fp)
    try:
        return manifest is not None and checked_head(cfg, manifest) is not None
    except IntegrityError:
        return False


def _find_head(cfg: PipelineConfig, ws: Workspace, encoder: str, variant: str, offset: dict[str, Any] | None,
               by_head: dict[str, list[dict[str, Any]]], eligible, rank) -> str | None:
    """The head of (encoder, variant) trained on this config's text namespace (and, for
    textme, with this offset): this run's, else the newest eligible one."""
    if variant == "textme" and offset is None:
        return None
    ns_text = None
    candidates = []
    for fp, rows in by_head.items():
        if rows[0]["encoder"] != encoder or (rows[0]["variant"] or "textme") != variant:
            continue
        if not any(eligible(r["run_id"]) for r in rows):
            continue
        path = ws.projection(fp)
        if not path.is_file() or not _intact(cfg, ws, fp):
            continue
        meta = _head_inputs(ws, fp, path)
        ns_text = ns_text or _namespace(cfg, encoder, "text")
        if meta.get("text_namespace") != ns_text:
            continue
        if meta.get("offset_fp") != (offset["offset_fp"] if variant == "textme" else None):
            continue
        candidates.append((max(rank(r["run_id"]) for r in rows), fp))
    return max(candidates)[1] if candidates else None


def _head_inputs(ws: Workspace, fp: str, path: Path) -> dict[str, Any]:
    """The head's text namespace and offset: from its train manifest when that records
    them (no torch needed), else from the checkpoint's metadata."""
    from tasks.common import read_manifest

    manifest = read_manifest(ws, fp) or {}
    inputs = manifest.get("train_inputs") or {}
    if "text_namespace" in inputs:
        return {"text_namespace": inputs["text_namespace"], "offset_fp": manifest.get("offset_fp")}
    from textme.projector import read_projection_metadata

    return read_projection_metadata(path)["metadata"]
