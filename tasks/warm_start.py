"""Which earlier head a warm-started head continues from (`training.warm_start`).

A centred head may continue from one an earlier run trained for the same encoder,
on the same text and pivot namespaces with the same recipe (every training parameter
but `epochs`), whose captions or offset differ from the current ones. The rule, the
same in the key function, the task body and `textme status` (so a re-run is a cache
hit):

1. a head trained from scratch on exactly the current inputs exists: use it (no warm
   start);
2. a warm head on exactly the current inputs exists: continue from what it continued
   from (its key again: a cache hit);
3. else the most recently trained compatible head on other captions: warm start from it;
4. none: train from scratch.

Train manifests record what they were trained on (`train_inputs`) and when
(`finished_at`); heads from before that are never warm-start sources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from tasks.common import read_manifest
from tasks.config import PipelineConfig
from tasks.workspace import Workspace

__all__ = ["warm_start_source", "recipe"]


def recipe(train: Mapping[str, Any]) -> dict[str, Any]:
    """Training parameters that must agree for a warm start (all but `epochs`)."""
    return {k: v for k, v in train.items() if k != "epochs"}


def _compatible(m: Mapping[str, Any], encoder: str, inputs: Mapping[str, Any]) -> bool:
    t = m.get("train_inputs")
    return (
        m.get("stage") == "train"
        and m.get("encoder") == encoder
        and m.get("variant") == "textme"
        and isinstance(t, Mapping)
        and t.get("text_namespace") == inputs["text_namespace"]
        and t.get("pivot_namespace") == inputs["pivot_namespace"]
        and isinstance(t.get("train"), Mapping)
        and recipe(t["train"]) == recipe(inputs["train"])
        and Path(m.get("path", "")).is_file()
    )


def warm_start_source(cfg: PipelineConfig, encoder: str, inputs: Mapping[str, Any], scratch_key: str) -> str | None:
    """The key of the head to continue from, or None (train from scratch). `inputs`:
    the scratch head's key inputs (tasks/keys.py train_inputs)."""
    ws = Workspace.of(cfg)
    if read_manifest(ws, scratch_key) is not None:
        return None
    same, other = [], []
    for path, m in ws.stage_manifests():
        if not _compatible(m, encoder, inputs):
            continue
        t = m["train_inputs"]
        when = str(m.get("finished_at") or "")
        on_these = t["captions"] == inputs["captions"] and t.get("offset") == inputs["offset"]
        (same if on_these else other).append((when, path.stem, m))
    epochs = cfg.training.warm_start_epochs
    for _, _, m in sorted(same, key=lambda c: (c[0], c[1]), reverse=True):
        if m.get("warm_start_from") and m.get("warm_start_epochs") == epochs:
            return str(m["warm_start_from"])
    if not other:
        return None
    return str(max(other, key=lambda c: (c[0], c[1]))[2]["projection_fp"])
