"""Stage 6, index: every corpus item of an encoder, in the pivot space, in the cache.

An encoder's corpus is every modal item the pipeline knows for it: the offset sample
(embed_items) and the items of the evaluations that read its modal tower. Each item
lands at `P_e(E_modal(x) - mu_modal)`, unit norm (textme.project), through the trained
head, or the released one where the encoder has no trained head. The vectors go into
the embedding cache as a namespace of their own, whose identity is the modal namespace
seen through that head and its offsets (keys.index_identity), addressed by item key
like every other vector: a re-run with nothing changed is a Prefect cache hit, and a
new stage key (a moved folder, a new evaluation) projects only the items the index
lacks.

The stage's manifest is the index's table of contents, what `textme search` reads:
encoder, modality, namespace, dim, and a sidecar `manifests/<key>.items.json` of
[key, path] rows in index order. At or above `index.ann_min_items` items, with faiss
installed, an approximate index is built too (tasks/ann.py) and named in the manifest.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prefect import task

from tasks import keys
from tasks.cache_policy import checked
from tasks.common import GPU_STAGE_OPTIONS, logger, open_cache, write_manifest
from tasks.config import PipelineConfig
from tasks.inputs import read_eval_manifest
from tasks.integrity import check_file, checked_head, checked_offset_dir, sha256_file
from tasks.sources import cached_file_key
from tasks.workspace import Workspace, atomic_write_text, read_json

__all__ = ["index", "build_index", "corpus_items", "encoder_modality", "indexable", "index_head", "read_index_items"]

#: Items projected and committed per chunk (bounds memory: chunk x in_dim + out_dim floats).
CHUNK = 65_536


def encoder_modality(cfg: PipelineConfig, encoder: str) -> str | None:
    """The modality label of an encoder: its offset dataset's `modality`, else the encoder's own."""
    entry = cfg.encoders[encoder]
    declared = cfg.datasets[entry.offset_dataset].modality if entry.offset_dataset else None
    if declared:
        return declared
    return getattr(keys.encoder_of(cfg, encoder), "modality", None)


def indexable(cfg: PipelineConfig, encoder: str) -> bool:
    """An encoder has an index when it has a modal tower and a head (trained or released)."""
    entry = cfg.encoders[encoder]
    return "modal" in keys.encoder_of(cfg, encoder).towers and (entry.train or entry.released is not None)


def index_head(entry_heads: dict[str, Any], train: bool) -> Any:
    """The head an index projects through: the trained one, else the released one."""
    return entry_heads["textme"] if train else entry_heads["released"]


def corpus_items(cfg: PipelineConfig, encoder: str, items_manifest: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(key, path) of every modal item of `encoder` the pipeline knows, first seen first,
    one row per key: the offset sample, then each evaluation's items in config order."""
    from tasks.embed import read_item_sample

    pairs: dict[str, str] = {}
    if items_manifest is not None:
        for k, p in zip(*read_item_sample(items_manifest, cfg)):
            pairs.setdefault(k, p)
    for spec in cfg.evaluation:
        fields = spec.fields
        if spec.task == "emergent":
            if encoder not in (fields["source"], fields["target"]):
                continue
            data = read_eval_manifest(spec)
            paths = [*(data.source_items if fields["source"] == encoder else []),
                     *(data.target_items if fields["target"] == encoder else [])]
        else:
            if fields["encoder"] != encoder:
                continue
            paths = read_eval_manifest(spec).all_item_paths()
        for p in paths:
            pairs.setdefault(cached_file_key(p), p)
    return list(pairs.items())


def read_index_items(manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(keys, paths) of an index manifest, in index order."""
    pairs = read_json(check_file(manifest["items_file"], manifest.get("items_sha256"), config="CONFIG",
                                 what=f"stage index of encoder {manifest.get('encoder')!r}"))
    return [k for k, _ in pairs], [p for _, p in pairs]


def build_index(cfg: PipelineConfig, encoder: str, head: dict[str, Any], modal: dict[str, Any] | None) -> dict[str, Any]:
    """Project the encoder's corpus into the pivot space and store it; the index manifest.

    head: the train or released manifest of the head; modal: the embed_items manifest
    (None when the encoder has no offsets of its own)."""
    from tasks.ann import ann_wanted, build_ann
    from tasks.bad_items import skipped_summary
    from tasks.embed import fill_cache, log_embedding, open_namespace
    from textme import load_offset, load_projection, project

    key = keys.index_key(cfg, encoder, head, modal)
    started = time.perf_counter()
    pairs = corpus_items(cfg, encoder, modal)
    modal_ns, enc = open_namespace(cfg, encoder, "modal")
    bad: list[Any] = []
    # Normally a no-op: the sample and the evaluation items are embedded upstream.
    requested, computed = fill_cache(modal_ns, enc, "modal", [k for k, _ in pairs], [p for _, p in pairs],
                                     f"{encoder}/modal", skipped=bad)
    if bad:
        logger().warning("index %s: %d items left out, they cannot be decoded: %s", encoder, len(bad),
                         skipped_summary(bad))
        left_out = {err.item for err in bad}
        pairs = [(k, p) for k, p in pairs if p not in left_out]
    log_embedding(cfg, key, [{"encoder": encoder, "tower": "modal", "namespace": modal_ns.id,
                              "n_requested": requested, "n_computed": computed,
                              "seconds": time.perf_counter() - started, "n_skipped": len(bad)}])
    projection = load_projection(checked_head(cfg, head))
    offset_dir = head.get("offset_dir")
    mu_modal = load_offset(checked_offset_dir(cfg, offset_dir, head.get("offset_sha256"), encoder)).modal_mean \
        if offset_dir else None
    ns = open_cache(cfg).namespace(keys.index_identity(cfg, encoder, head), dim=projection.out_dim, dtype="float32")
    todo = ns.missing([k for k, _ in pairs])
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        ns.put(chunk, project(projection, modal_ns.get(chunk), offset=mu_modal))
    ws = Workspace.of(cfg)
    sidecar = ws.manifests / f"{key}.items.json"
    atomic_write_text(sidecar, json.dumps([[k, p] for k, p in pairs]))
    manifest: dict[str, Any] = {
        "stage": "index",
        "encoder": encoder,
        "variant": head.get("variant", "textme"),
        "modality": encoder_modality(cfg, encoder),
        "namespace": ns.id,
        "modal_namespace": modal_ns.id,
        "dim": int(projection.out_dim),
        "n_items": len(pairs),
        "n_projected": len(todo),
        "items_file": str(sidecar),
        "items_sha256": sha256_file(sidecar),
        "projection_fp": head["projection_fp"],
        "projection": head["path"],
        "projection_sha256": head.get("sha256"),
        "offset_fp": head.get("offset_fp"),
        "offset_dir": offset_dir,
        "offset_sha256": head.get("offset_sha256"),
        "ann_file": None,
    }
    if ann_wanted(cfg, len(pairs)):
        manifest["ann_file"] = str(build_ann(cfg, ns, [k for k, _ in pairs], key))
    logger().info("index %s: %d items (%d projected now) through the %s head, %s%s", encoder, len(pairs),
                  len(todo), manifest["variant"], ns.id[:16],
                  f", ANN {manifest['ann_file']}" if manifest["ann_file"] else "")
    return write_manifest(ws, key, manifest)


@task(name="index", task_run_name="index-{encoder}", cache_policy=checked(keys.index_key_fn), **GPU_STAGE_OPTIONS)
def index(config: str, encoder: str, head: dict[str, Any], modal: dict[str, Any] | None) -> dict[str, Any]:
    """Prefect task: head = the train (or released) manifest, modal = the embed_items
    manifest or None."""
    return build_index(keys.load_snapshot(config), encoder, head, modal)
