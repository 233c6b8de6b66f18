"""Text search over every projected corpus: the emergent cross-modal retrieval.

Each encoder's modal items that the pipeline embedded (the offset sample and the
evaluation items) are projected with its trained head, centred with its own mu_modal,
into the pivot space; the query is the pivot's query-tower embedding of the text. So
one text query ranks images, sounds and point clouds together, though no head ever saw
a modal item in training. Only the query is encoded here; items come from the cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks import keys
from tasks.common import open_cache
from tasks.config import ConfigError, PipelineConfig
from tasks.inputs import read_eval_manifest
from tasks.integrity import checked_head, checked_offset_dir
from tasks.plan import replay
from tasks.sources import cached_file_key

__all__ = ["search_corpora", "corpus_items"]


def _modality(cfg: PipelineConfig, encoder: str) -> str | None:
    entry = cfg.encoders[encoder]
    declared = cfg.datasets[entry.offset_dataset].modality if entry.offset_dataset else None
    if declared:
        return declared
    return getattr(keys.build_encoder(entry.encoder, entry.options), "modality", None)


def corpus_items(cfg: PipelineConfig, encoder: str, items_manifest: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(key, path) of every modal item of `encoder` the pipeline knows, de-duplicated."""
    from tasks.embed import read_item_sample

    pairs: dict[str, str] = {}
    if items_manifest is not None:
        for k, p in zip(*read_item_sample(items_manifest, cfg)):
            pairs.setdefault(k, p)
    for spec in cfg.evaluation:
        fields = spec.fields
        try:
            if spec.task == "emergent":
                if encoder not in (fields["source"], fields["target"]):
                    continue
                data = read_eval_manifest(spec)
                paths = data.source_items if fields["source"] == encoder else data.target_items
            else:
                if fields["encoder"] != encoder:
                    continue
                data = read_eval_manifest(spec)
                paths = data.all_item_paths()
        except (OSError, ValueError):
            continue  # a missing manifest only shrinks the corpus
        for p in paths:
            pairs.setdefault(cached_file_key(p), p)
    return list(pairs.items())


def search_corpora(cfg: PipelineConfig, text: str, *, modality: str | None = None,
                   k: int = 10) -> tuple[list[dict[str, Any]], bool]:
    """Top-k items over all (or one modality's) corpora; (hits, any stand-in model)."""
    from storage.fingerprint import normalize_text
    from textme import load_offset, load_projection, project

    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    rep = replay(cfg)
    encoders = [e for e in cfg.encoders if modality is None or _modality(cfg, e) == modality]
    if not encoders:
        known = sorted({m for e in cfg.encoders if (m := _modality(cfg, e))})
        raise ConfigError(f"{cfg.path}: no encoder of modality {modality!r} (known: {', '.join(known)})")
    items_by_encoder = {st.encoder: st for st in rep.stages if st.stage == "embed_items"}
    cache = open_cache(cfg)
    scored: list[dict[str, Any]] = []
    query_vec = None
    stand_in = False
    usable = 0
    for e in encoders:
        # our trained head, else the released one; each manifest names its offsets
        head_st = next((st for st in (rep.heads[e]["textme"], rep.heads[e]["released"])
                        if st is not None and st.manifest is not None), None)
        if head_st is None:
            continue
        items_st = items_by_encoder.get(e)
        pairs = corpus_items(cfg, e, items_st.manifest if items_st is not None else None)
        ns_id = keys.namespace_id(keys.encoder_identity(cfg, e, "modal"))
        try:
            ns = cache.open_namespace(ns_id)
        except KeyError:
            continue
        missing = set(ns.missing([key for key, _ in pairs]))
        pairs = [(key, p) for key, p in pairs if key not in missing]
        if not pairs:
            continue
        usable += 1
        m = head_st.manifest
        offset = load_offset(checked_offset_dir(cfg, m["offset_dir"], m.get("offset_sha256"), e))
        z = project(load_projection(checked_head(cfg, m)), ns.get([key for key, _ in pairs]),
                    offset=offset.modal_mean)
        if query_vec is None:
            ref = cfg.pivot
            query_vec = keys.build_encoder(ref.encoder, ref.options).encode("query", [normalize_text(text)])[0]
        scores = z @ query_vec
        stand_in = stand_in or keys.is_stand_in(cfg, e)
        for (key, path), s in zip(pairs, scores):
            scored.append({"score": float(s), "encoder": e, "modality": _modality(cfg, e), "item": path, "key": key})
    if usable == 0:
        raise ConfigError(f"{cfg.path}: no trained head with embedded items yet; run `textme run` first")
    stand_in = stand_in or keys.is_stand_in(cfg, "pivot")
    order = np.argsort([-h["score"] for h in scored], kind="stable")[:k]
    return [scored[i] for i in order], stand_in
