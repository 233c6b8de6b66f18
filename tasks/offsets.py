"""Stage 3, offsets: mu_text and mu_modal of one encoder, from cached vectors only.

n captions of the encoder's offset dataset are sampled with the config's seed (from
the snapshot's distinct captions, in snapshot order), the modal items are the ones the
embed_items stage sampled; both centroids come out of the cache, never out of a model.
Saved in our format and, beside it, as the official `text_embed_mean.pkl` /
`img_embed_mean.pkl`, so the official evaluation scripts (and `textme export`) can read
them too.

With the encoder's `normalize: false` the cached vectors are raw, but a centroid is
still the mean of unit-normalised rows (`textme.centroid`), exactly as the official
`compute_offset.py` computes it; only the inputs centred with it stay raw. An encoder
with `train: false` and a released offset folder has no offsets stage at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from tasks import keys
from tasks.cache_policy import checked
from tasks.common import STAGE_OPTIONS, current_run_id, logger, open_tables, write_manifest
from tasks.config import PipelineConfig
from tasks.integrity import folder_sha256
from tasks.workspace import Workspace

__all__ = ["compute_offsets", "compute_offset", "sample_captions", "sample_centroid", "OFFSET_FILES"]

#: The files of an offsets folder (ours, then the official pickles); each one's sha256
#: goes into the manifest.
OFFSET_FILES = ("offset.json", "text_mean.npy", "modal_mean.npy", "text_embed_mean.pkl", "img_embed_mean.pkl")


def sample_captions(shas: Sequence[str], n: int, seed: int) -> list[str]:
    """`n` of the given caption keys (all when fewer), chosen with `seed`, in input order."""
    if len(shas) <= n:
        return list(shas)
    idx = np.sort(np.random.default_rng(seed).choice(len(shas), size=n, replace=False))
    return [shas[i] for i in idx]


def _save_official(vector: np.ndarray, path: Path) -> None:
    """Write an official pickle unless the file there already holds exactly `vector`: a
    pickled tensor's bytes differ from process to process (its storage key), and a
    re-run that rewrote equal values would change the sha256 the heads recorded."""
    from textme.offsets import load_official_offset, save_official_offset

    try:
        if np.array_equal(load_official_offset(path), vector):
            return
    except (OSError, ValueError):
        pass
    save_official_offset(vector, path)


def sample_centroid(ns: Any, sample: list[str]) -> np.ndarray:
    """`textme.centroid` of the sample's cached vectors, read chunk by chunk (the same
    float32 result as reading them all at once, in bounded memory)."""
    from textme.offsets import CentroidAccumulator

    from tasks.vectors import iter_rows

    if not sample:
        raise ValueError(f"offsets: an empty sample from cache namespace {ns.id[:12]}; nothing to average")
    acc = CentroidAccumulator(ns.dim)
    for rows in iter_rows(ns, sample):
        acc.add(rows)
    return acc.mean()


def compute_offset(
    cfg: PipelineConfig, encoder: str, text: dict[str, Any], modal: dict[str, Any], captions: dict[str, Any]
) -> dict[str, Any]:
    from textme.offsets import Offset, save_offset, save_official_offset

    from tasks.embed import namespace_of, read_item_sample
    from tasks.ingest import read_snapshot

    key = keys.offsets_key(cfg, encoder, text, modal, captions)
    shas, _ = read_snapshot(cfg, captions)
    chosen = sample_captions(shas, cfg.offsets.n_samples, cfg.offsets.seed)
    item_keys, _ = read_item_sample(modal, cfg)
    offset = Offset(sample_centroid(namespace_of(cfg, text), chosen),
                    sample_centroid(namespace_of(cfg, modal), item_keys),
                    n_text=len(chosen), n_modal=len(item_keys))
    ws = Workspace.of(cfg)
    folder = ws.offset_dir(key)
    save_offset(offset, folder, encoder=encoder, dataset=captions["dataset"], stage_key=key,
                text_namespace=text["namespace"], modal_namespace=modal["namespace"],
                captions_fp=captions["captions_fp"], items_fp=modal["items_fp"])
    _save_official(offset.text_mean, folder / "text_embed_mean.pkl")
    _save_official(offset.modal_mean, folder / "img_embed_mean.pkl")
    norms = offset.norms
    row = {
        "run_id": current_run_id(),
        "encoder": encoder,
        "dataset": captions["dataset"],
        "identity_fp": modal["namespace"],
        "n_text": offset.n_text,
        "n_modal": offset.n_modal,
        "text_mean_norm": norms["text"],
        "modal_mean_norm": norms["modal"],
        "gap_norm": offset.gap_norm,
        "offset_fp": key,
        "path": str(folder),
    }
    open_tables(cfg).append("offsets", [row], part=key)
    logger().info("offsets %s: gap norm %.3f (|mu_text| %.3f, |mu_modal| %.3f; %d texts, %d items)",
                  encoder, offset.gap_norm, norms["text"], norms["modal"], offset.n_text, offset.n_modal)
    manifest = {
        "stage": "offsets",
        "encoder": encoder,
        "dataset": captions["dataset"],
        "offset_fp": key,
        "dir": str(folder),
        "sha256": folder_sha256(folder, OFFSET_FILES),
        "n_text": offset.n_text,
        "n_modal": offset.n_modal,
        "gap_norm": offset.gap_norm,
    }
    return write_manifest(ws, key, manifest)


@task(name="offsets", task_run_name="offsets-{encoder}", cache_policy=checked(keys.offsets_key_fn), **STAGE_OPTIONS)
def compute_offsets(
    config: str, encoder: str, text: dict[str, Any], modal: dict[str, Any], captions: dict[str, Any]
) -> dict[str, Any]:
    """Prefect task: text/modal = embed manifests, captions = the offset dataset's ingest manifest."""
    return compute_offset(keys.load_snapshot(config), encoder, text, modal, captions)
