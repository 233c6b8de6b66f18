"""Stage 2, embed: captions (or modal items) -> vectors in the embedding cache.

The cache is asked which keys it lacks; only those are encoded, in chunks, and each
chunk is committed (`ns.put`) before the next is encoded, so a killed run loses at most
one chunk and the re-run resumes from there. Chunks are cut from the missing keys in
request order, so an interrupted and an uninterrupted run encode the same batches.
Every call logs one `embed_log` row: how many vectors were asked for, how many computed.

Nothing but small manifests leaves this module: downstream stages read vectors back
from the cache by key.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Sequence

from prefect import task

from tasks import keys
from tasks.cache_policy import checked
from tasks.bad_items import SHOWN_SKIPPED, encode_chunk, skipped_summary
from tasks.common import GPU_STAGE_OPTIONS, current_run_id, logger, now, open_cache, open_tables, write_manifest
from tasks.config import PipelineConfig
from tasks.inputs import InputError, sample_items
from tasks.integrity import checked_item_sample, sha256_file
from tasks.progress import stage_progress
from tasks.workspace import Workspace, atomic_write_text, read_json

__all__ = [
    "embed_texts",
    "embed_items",
    "embed_captions",
    "embed_item_sample",
    "fill_cache",
    "log_embedding",
    "open_namespace",
    "namespace_of",
    "read_item_sample",
    "chunk_size",
]

DEFAULT_CHUNK = 4096


def chunk_size() -> int:
    """Inputs encoded per committed chunk (TEXTME_EMBED_CHUNK; never changes outputs)."""
    value = os.environ.get("TEXTME_EMBED_CHUNK", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else DEFAULT_CHUNK


def open_namespace(cfg: PipelineConfig, encoder: str, tower: str):
    """(namespace, encoder object) for one tower of a config's encoder.

    An existing namespace is opened by id, so nothing asks the encoder for its `dim`
    (which may load the model) unless the namespace is new.
    """
    ref = keys.encoder_ref(cfg, encoder)
    enc = keys.build_encoder(ref.encoder, ref.options)
    identity = enc.identity(tower)
    cache = open_cache(cfg)
    try:
        ns = cache.open_namespace(keys.namespace_id(identity))
    except KeyError:
        ns = cache.namespace(identity, dim=enc.dim)
    return ns, enc


def namespace_of(cfg: PipelineConfig, manifest: dict[str, Any]):
    """The cache namespace an embed manifest wrote to."""
    return open_cache(cfg).open_namespace(manifest["namespace"])


def fill_cache(ns: Any, enc: Any, tower: str, keys_: Sequence[str], inputs: Sequence[str],
               label: str = "", skipped: list[Any] | None = None) -> tuple[int, int]:
    """Encode the inputs whose keys `ns` lacks, committing chunk by chunk (progress is
    logged per chunk under `label`, e.g. "clip/text").

    `skipped`: None, and an input the encoder cannot decode fails the fill; a list, and
    such inputs are left out and their `BadItemError`s appended to it (tasks/bad_items.py).
    Returns (n_requested: distinct keys asked for, n_computed: vectors newly stored).
    """
    first: dict[str, int] = {}
    for i, k in enumerate(keys_):
        first.setdefault(k, i)
    # Stages running in parallel threads often need the same vectors (two evaluations
    # sharing query texts): one fill per namespace at a time, so each is computed once.
    with _namespace_lock(ns.id):
        missing = ns.missing(list(first))
        computed = 0
        step = chunk_size()
        started = time.perf_counter()
        with stage_progress(f"embed {label or tower}", len(missing), "items", long=len(missing) > step) as bar:
            for start in range(0, len(missing), step):
                chunk = missing[start : start + step]
                kept, vectors, bad = encode_chunk(enc, tower, chunk, [inputs[first[k]] for k in chunk],
                                                  skip=skipped is not None)
                if bad:
                    skipped.extend(bad)
                if kept:
                    computed += ns.put(kept, vectors)
                bar.advance(len(chunk))
                if len(missing) > step:  # long encodes: one progress line per committed chunk
                    done = start + len(chunk)
                    rate = done / max(time.perf_counter() - started, 1e-9)
                    logger().info("embed %s: %d/%d committed (%.0f items/s, ~%.0fs left)",
                                  label or tower, done, len(missing), rate, (len(missing) - done) / rate)
    return len(first), computed


_namespace_locks: dict[str, threading.Lock] = {}
_namespace_locks_guard = threading.Lock()


def _namespace_lock(ns_id: str) -> threading.Lock:
    with _namespace_locks_guard:
        return _namespace_locks.setdefault(ns_id, threading.Lock())


def log_embedding(cfg: PipelineConfig, key: str, entries: list[dict[str, Any]]) -> None:
    """embed_log rows for one stage call: entries of encoder, tower, namespace,
    n_requested, n_computed, seconds (and n_skipped, skipped: items left out as
    undecodable, and the first of their paths). part = (run, stage key): a retried
    attempt keeps the first rows written instead of adding more."""
    run_id = current_run_id()
    logged_at = now()
    rows = [
        {
            "run_id": run_id,
            "stage": key,
            "encoder": e["encoder"],
            "tower": e["tower"],
            "namespace": e["namespace"],
            "n_requested": int(e["n_requested"]),
            "n_computed": int(e["n_computed"]),
            "seconds": float(e.get("seconds", 0.0)),
            "created_at": logged_at,
            "n_skipped": int(e.get("n_skipped", 0)),
            "skipped": e.get("skipped"),
        }
        for e in entries
    ]
    if rows:
        open_tables(cfg).append("embed_log", rows, part=f"{run_id}-{key}")


def embed_captions(cfg: PipelineConfig, encoder: str, tower: str, captions: list[dict[str, Any]]) -> dict[str, Any]:
    """Embed every caption of the given snapshots with one tower of one encoder."""
    from tasks.ingest import read_snapshot

    key = keys.embed_texts_key(cfg, encoder, tower, captions)
    shas: list[str] = []
    texts: list[str] = []
    for manifest in captions:
        s, t = read_snapshot(cfg, manifest)
        shas.extend(s)
        texts.extend(t)
    started = time.perf_counter()
    ns, enc = open_namespace(cfg, encoder, tower)
    requested, computed = fill_cache(ns, enc, tower, shas, texts, f"{encoder}/{tower}")
    seconds = time.perf_counter() - started
    log_embedding(cfg, key, [{"encoder": encoder, "tower": tower, "namespace": ns.id, "n_requested": requested,
                              "n_computed": computed, "seconds": seconds}])
    logger().info("embed %s/%s: %d texts requested, %d computed (%.1fs)", encoder, tower, requested, computed, seconds)
    manifest = {
        "stage": "embed",
        "encoder": encoder,
        "tower": tower,
        "namespace": ns.id,
        "dim": int(ns.dim),
        "captions": [c["captions_fp"] for c in captions],
        "n_requested": requested,
        "n_computed": computed,
    }
    return write_manifest(Workspace.of(cfg), key, manifest)


def embed_item_sample(cfg: PipelineConfig, encoder: str) -> dict[str, Any]:
    """Embed the sampled modal items of the encoder's offset dataset (for mu_modal)."""
    key = keys.embed_items_key(cfg, encoder)
    entry = cfg.encoders[encoder]
    spec = cfg.datasets[entry.offset_dataset]
    sample = sample_items(spec.items, cfg.offsets.n_samples, cfg.offsets.seed)
    started = time.perf_counter()
    ns, enc = open_namespace(cfg, encoder, "modal")
    bad: list[Any] | None = [] if spec.on_bad_item == "skip" else None
    requested, computed = fill_cache(ns, enc, "modal", sample.keys, sample.paths, f"{encoder}/modal", skipped=bad)
    seconds = time.perf_counter() - started
    bad = bad or []
    skipped = {err.item for err in bad}
    log_embedding(cfg, key, [{"encoder": encoder, "tower": "modal", "namespace": ns.id, "n_requested": requested,
                              "n_computed": computed, "seconds": seconds, "n_skipped": len(bad),
                              "skipped": "\n".join(err.item for err in bad[:SHOWN_SKIPPED]) or None}])
    logger().info("embed %s/modal: %d items requested, %d computed (%.1fs)", encoder, requested, computed, seconds)
    pairs = [(k, p) for k, p in zip(sample.keys, sample.paths) if p not in skipped]
    if bad:
        logger().warning("embed %s/modal: %d of %d items skipped, they cannot be decoded "
                         "(datasets.%s.on_bad_item: skip): %s", encoder, len(bad), len(sample.paths),
                         entry.offset_dataset, skipped_summary(bad))
        if not pairs:
            raise InputError(f"{spec.items}: none of the {len(sample.paths)} sampled items can be decoded "
                             f"({skipped_summary(bad, 1)})")
    ws = Workspace.of(cfg)
    # The sampled (key, path) list is a sidecar: offsets read it, `textme search` shows paths.
    sidecar = ws.manifests / f"{key}.items.json"
    atomic_write_text(sidecar, json.dumps([[k, p] for k, p in pairs]))
    manifest = {
        "stage": "embed_items",
        "encoder": encoder,
        "tower": "modal",
        "dataset": entry.offset_dataset,
        "namespace": ns.id,
        "dim": int(ns.dim),
        "items_fp": sample.fingerprint,
        "items_file": str(sidecar),
        "items_sha256": sha256_file(sidecar),
        "n_items": len(pairs),
        "n_available": sample.n_available,
        "n_requested": requested,
        "n_computed": computed,
        "n_skipped": len(bad),
        "skipped": [err.item for err in bad],
    }
    return write_manifest(ws, key, manifest)


def read_item_sample(manifest: dict[str, Any], cfg: PipelineConfig | None = None) -> tuple[list[str], list[str]]:
    """(keys, paths) of the items an embed_items manifest embedded, after the sample
    file's sha256 check (`cfg`: the config named in the error's repair)."""
    pairs = read_json(checked_item_sample(cfg, manifest))
    return [k for k, _ in pairs], [p for _, p in pairs]


@task(name="embed-texts", task_run_name="embed-{encoder}-{tower}", cache_policy=checked(keys.embed_texts_key_fn),
      **GPU_STAGE_OPTIONS)
def embed_texts(config: str, encoder: str, tower: str, captions: list[dict[str, Any]]) -> dict[str, Any]:
    """Prefect task: embed the captions of `captions` (ingest manifests) into the cache."""
    return embed_captions(keys.load_snapshot(config), encoder, tower, captions)


@task(name="embed-items", task_run_name="embed-{encoder}-modal", cache_policy=checked(keys.embed_items_key_fn),
      **GPU_STAGE_OPTIONS)
def embed_items(config: str, encoder: str) -> dict[str, Any]:
    """Prefect task: embed the encoder's sampled modal items into the cache."""
    return embed_item_sample(keys.load_snapshot(config), encoder)
