"""Replay the DAG's keys without running anything: what is cached, missing or stale.

Each stage's key is computed exactly as its task's cache policy would, from the
config, the inputs' content and the upstream manifests stored under
<workdir>/manifests/. A stage is

- `cached`: its manifest (passing its own sha256) and Prefect's result record for the
  current key both exist (the next run will not execute it, unless a file it names fails
  its sha256: `textme verify` checks those);
- `stale`: an earlier result for the same stage and unit exists, under another key
  (inputs, parameters or code changed since);
- `missing`: never computed (or an upstream stage is not cached, so its key is not
  known yet).

No model is loaded: keys need encoder identities, which never load weights. Used by
`textme status`, `textme search` (it finds the current index through `Replay.index`)
and the evaluation-only flow.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from tasks import keys
from tasks.common import read_manifest
from tasks.config import PipelineConfig
from tasks.validate import pivot_datasets, text_datasets, used_datasets
from tasks.workspace import Workspace

__all__ = ["StageStatus", "Replay", "replay", "unit_of"]


@dataclass
class StageStatus:
    stage: str
    unit: str  # dataset, encoder/tower, encoder/variant or evaluation name
    encoder: str | None
    status: str  # cached | stale | missing
    key: str | None = None
    manifest: dict[str, Any] | None = field(default=None, repr=False)
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "unit": self.unit, "encoder": self.encoder, "status": self.status,
                "key": self.key, "detail": self.detail}


def unit_of(manifest: dict[str, Any]) -> str | None:
    stage = manifest.get("stage")
    if stage == "ingest":
        return manifest["dataset"]
    if stage in ("embed", "embed_items"):
        return f"{manifest['encoder']}/{manifest['tower']}"
    if stage == "offsets":
        return manifest["encoder"]
    if stage in ("train", "released"):
        return f"{manifest['encoder']}/{manifest['variant']}"
    if stage == "evaluate":
        return manifest["name"]
    if stage == "index":
        return f"{manifest['encoder']}/index"
    return None


class Replay:
    """Walks the DAG in order; each `check` returns the stage's status and manifest."""

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.ws = Workspace.of(cfg)
        self.stages: list[StageStatus] = []
        self._seen: dict[tuple[str, str], set[str]] = defaultdict(set)
        for path, m in self.ws.stage_manifests():
            unit = unit_of(m)
            if unit is not None:
                self._seen[(m["stage"], unit)].add(m.get("key", path.stem))

    def check(self, stage: str, unit: str, encoder: str | None, key_fn) -> StageStatus:
        """key_fn() computes the key; it may fail (missing input, upstream not cached)."""
        try:
            key = key_fn()
        except _Blocked as exc:
            key, detail = None, str(exc)
        except Exception as exc:  # an input problem: report it, keep going
            key, detail = None, f"{type(exc).__name__}: {exc}".splitlines()[0]
        else:
            detail = ""
        manifest = read_manifest(self.ws, key) if key else None
        record = key is not None and (self.ws.prefect_results / key).is_file()
        earlier = self._seen.get((stage, unit), set()) - ({key} if key else set())
        if manifest is not None and record:
            status = "cached"
        elif earlier:
            status, detail = "stale", detail or "inputs, parameters or code changed since the last run"
        else:
            status = "missing"
        st = StageStatus(stage, unit, encoder, status, key, manifest, detail)
        self.stages.append(st)
        return st


class _Blocked(Exception):
    """An upstream stage has no manifest yet, so this key cannot be computed."""


def _need(*statuses: StageStatus | None) -> list[dict[str, Any]]:
    out = []
    for st in statuses:
        if st is None or st.manifest is None:
            raise _Blocked(f"waits for {st.stage} {st.unit}" if st is not None else "waits for upstream")
        out.append(st.manifest)
    return out


def replay(cfg: PipelineConfig) -> Replay:
    """Statuses of every stage of the config's DAG, in DAG order (see module doc)."""
    r = Replay(cfg)
    caps = {d: r.check("ingest", d, None, lambda d=d: keys.ingest_key(cfg, d)) for d in used_datasets(cfg)}

    def captions(names: list[str]) -> list[dict[str, Any]]:
        return _need(*(caps[n] for n in names))

    trained = pivot_datasets(cfg)
    pivot = r.check("embed", "pivot/text", "pivot",
                    lambda: keys.embed_texts_key(cfg, "pivot", "text", captions(trained))) if trained else None
    heads: dict[str, dict[str, StageStatus | None]] = {}
    modals: dict[str, StageStatus | None] = {}
    for e, entry in cfg.encoders.items():
        text = modal = off = centred = uncentred = released = None
        if text_datasets(cfg, e):
            text = r.check("embed", f"{e}/text", e,
                           lambda e=e: keys.embed_texts_key(cfg, e, "text", captions(text_datasets(cfg, e))))
        if entry.own_offsets:
            modal = r.check("embed_items", f"{e}/modal", e, lambda e=e: keys.embed_items_key(cfg, e))
            off = r.check("offsets", e, e, lambda e=e, text=text, modal=modal, entry=entry: keys.offsets_key(
                cfg, e, *_need(text, modal), *captions([entry.offset_dataset])))
        if entry.train:
            centred = r.check("train", f"{e}/textme", e, lambda e=e, text=text, off=off, entry=entry: keys.train_key(
                cfg, e, *_need(text, pivot), captions(list(entry.train_on)), *_need(off)))
            if cfg.training.ablate_centring:
                uncentred = r.check("train", f"{e}/uncentred", e,
                                    lambda e=e, text=text, entry=entry, centred=centred: keys.uncentred_key(
                                        cfg, e, *_need(text, pivot), captions(list(entry.train_on)),
                                        *_need(centred)))
        if entry.released is not None:
            released = r.check("released", f"{e}/released", e, lambda e=e, off=off, entry=entry: keys.released_key(
                cfg, e, None if entry.has_released_offset else _need(off)[0]))
        heads[e] = {"offset": off, "textme": centred, "uncentred": uncentred, "released": released}
        modals[e] = modal

    for spec in cfg.evaluation:
        def eval_key(spec=spec) -> str:
            manifests = {}
            for e in spec.encoders():
                manifests[e] = {k: (None if st is None else _need(st)[0]) for k, st in heads[e].items()}
            return keys.evaluate_key(cfg, spec.name, manifests, None if pivot is None else _need(pivot)[0])

        r.check("evaluate", spec.name, None, eval_key)

    from tasks.index import index_head, indexable

    index: dict[str, StageStatus] = {}
    for e, entry in cfg.encoders.items():
        if not indexable(cfg, e):
            continue
        head = index_head(heads[e], entry.train)
        index[e] = r.check("index", f"{e}/index", e, lambda e=e, head=head: keys.index_key(
            cfg, e, *_need(head), None if modals[e] is None else _need(modals[e])[0]))
    r.heads = heads  # type: ignore[attr-defined]
    r.index = index  # type: ignore[attr-defined]
    r.pivot = pivot  # type: ignore[attr-defined]
    return r
