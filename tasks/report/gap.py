"""The modality gap of one encoder, from the sample its offsets were computed on.

The offsets stage embedded a seeded sample of captions and items; their vectors are in
the cache. This module finds that sample again from the tables and the stage manifests
(never running an encoder), and returns the text and modal points in each space the
method moves them through:

- before centring: the L2-normalised embeddings (the centroids are means of these);
- after centring: each side minus its own centroid (mu_text, mu_modal);
- after the head: the textme head applied as at evaluation, each side centred with its
  own centroid (`textme.project`), in the pivot space;
- after the uncentred head (when the ablation was trained): raw embeddings through the
  head trained on raw text: the gap stays in.

Each view carries its gap norm, ||mean(text) - mean(modal)||; before centring it is the
offsets row's `gap_norm`, which `gap_views` checks, so a sample rebuilt wrongly fails
loudly instead of drawing something else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.common import open_cache, open_tables, read_manifest
from tasks.integrity import checked_offset_dir
from tasks.config import PipelineConfig
from tasks.workspace import Workspace

__all__ = ["GapView", "gap_views", "gap_norm", "offset_sample"]

#: How far the rebuilt sample's centroid may sit from the stored one (float32 means).
_TOLERANCE = 1e-4


@dataclass
class GapView:
    label: str  # "before centring", ...
    space: str  # "<encoder> space" or "pivot space"
    text: np.ndarray  # [n, d]
    modal: np.ndarray  # [m, d]

    @property
    def gap_norm(self) -> float:
        return gap_norm(self.text, self.modal)


def gap_norm(text: np.ndarray, modal: np.ndarray) -> float:
    """||mean(text) - mean(modal)|| in float64."""
    return float(np.linalg.norm(text.astype(np.float64).mean(0) - modal.astype(np.float64).mean(0)))


def _normalised(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _items_manifest(ws: Workspace, items_fp: str, namespace: str) -> dict[str, Any]:
    for path, m in ws.stage_manifests():
        if m.get("stage") == "embed_items" and m.get("items_fp") == items_fp and m.get("namespace") == namespace:
            beside = path.with_name(f"{path.stem}.items.json")  # still found after the workdir moved
            return {**m, "items_file": str(beside)} if beside.is_file() else m
    raise FileNotFoundError(f"no embed_items manifest for item sample {items_fp[:12]} under {ws.manifests}")


def offset_sample(cfg: PipelineConfig, row: dict[str, Any], seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """(Offset, text vectors, modal vectors) of an `offsets` row's sample, from the cache
    (cfg says where the workdir and cache are; seed is the run's `offsets.seed`)."""
    from textme import load_offset

    from tasks.embed import read_item_sample
    from tasks.offsets import sample_captions

    ws = Workspace.of(cfg)
    folder = ws.offset_dir(row["offset_fp"])
    if not folder.is_dir() and row.get("path"):  # an offsets folder outside this workdir
        folder = Path(row["path"])
    manifest = read_manifest(ws, row["offset_fp"])
    offset = load_offset(checked_offset_dir(cfg, folder, manifest and manifest.get("sha256"), row["encoder"]))
    meta = offset.metadata
    captions = open_tables(cfg).read("captions", filters={"dataset": meta["dataset"],
                                                          "snapshot": meta["captions_fp"]})
    shas = captions.sort_by("text_sha")["text_sha"].to_pylist()
    chosen = sample_captions(shas, row["n_text"], seed)
    item_keys, _ = read_item_sample(_items_manifest(ws, meta["items_fp"], meta["modal_namespace"]), cfg)
    cache = open_cache(cfg)
    text = cache.open_namespace(meta["text_namespace"]).get(chosen)
    modal = cache.open_namespace(meta["modal_namespace"]).get(item_keys)
    return offset, text, modal


def gap_views(cfg: PipelineConfig, row: dict[str, Any], heads: dict[str, str], *, seed: int) -> list[GapView]:
    """The views of one encoder's gap; `heads` maps variant -> projection path."""
    from textme import load_projection, project

    offset, text, modal = offset_sample(cfg, row, seed)
    enc = row["encoder"]
    t, m = _normalised(text), _normalised(modal)
    for side, vecs, mean in (("text", t, offset.text_mean), ("modal", m, offset.modal_mean)):
        if mean is None or not np.allclose(vecs.mean(0), mean, atol=_TOLERANCE):
            raise ValueError(f"offsets {row['offset_fp'][:20]} of {enc}: the {side} sample rebuilt from the tables "
                             f"does not give the stored centroid")
    views = [GapView("before centring", f"{enc} space", t, m),
             GapView("after centring", f"{enc} space", t - offset.text_mean, m - offset.modal_mean)]
    if heads.get("textme"):
        head = load_projection(heads["textme"])
        views.append(GapView("after the head", "pivot space", project(head, text, offset=offset.text_mean),
                             project(head, modal, offset=offset.modal_mean)))
    if heads.get("uncentred"):
        head = load_projection(heads["uncentred"])
        views.append(GapView("uncentred head", "pivot space", project(head, text), project(head, modal)))
    return views
