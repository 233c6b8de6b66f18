"""Stage 4, train: a projection head per encoder, from cached vectors only.

Reads the encoder's text vectors and the pivot's vectors of the same captions from the
cache (no encoder runs here: 50 epochs never touch a model) in bounded chunks, keeping
them in the cache's dtype (float16: half of float32, values unchanged), and calls
`textme.train_projection_with_uncentred`: the centred head, trained on
E_text(c) - mu_text, and its uncentred twin's first running mean (what training on raw
text would give; `textme.training.UncentredShift`), saved beside the head. The head is
saved with `textme.save_projection` as projections/<fp>.pt (fp = this stage's key), its
per-epoch history as `training` rows. Each epoch's loss is logged as it ends (and drawn
on a progress bar in a terminal, tasks/progress.py).

Memory: a head holds rows x (text dim + pivot dim) x 2 bytes while it trains
(`textme.training.training_memory_bytes` adds the optimizer and one batch). Heads
reserve that against `training.memory_budget_gb` (tasks/budget.py) before reading
anything, so heads that do not fit together wait; one larger than the budget runs
alone, with a warning.

`training.warm_start`: a centred head continues for `warm_start_epochs` from the head
an earlier run trained on other captions (tasks/warm_start.py), with a fresh optimizer
and the schedule over those epochs; its manifest and results rows name that head
(`warm_start_from`).

The `uncentred` ablation (`derive_uncentred`) trains nothing: the centred head with
its twin's running mean. Heads trained before the twin was kept are ablated by training
on raw text, as before. The text vectors are what the encoder's `normalize` setting made
them, through the text namespace in the key. An encoder with `train: false` has no
train stage.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from prefect import task

from tasks import keys
from tasks.cache_policy import checked
from tasks.common import GPU_STAGE_OPTIONS, STAGE_OPTIONS, current_run_id, logger, now, open_tables, read_manifest, \
    write_manifest
from tasks.config import PipelineConfig
from tasks.integrity import check_file, checked_head, checked_offset_dir, sha256_file
from tasks.progress import stage_progress
from tasks.workspace import Workspace

__all__ = ["train", "train_head", "training_captions", "uncentred", "derive_uncentred", "head_memory_bytes"]

#: Suffix of the file beside a centred head holding its uncentred twin's first running mean.
TWIN_SUFFIX = ".uncentred-running-mean.npy"


def training_captions(cfg: PipelineConfig, captions: list[dict[str, Any]]) -> list[str]:
    """Distinct caption keys of the snapshots, in snapshot order (the training rows)."""
    from tasks.ingest import read_snapshot

    if len(captions) == 1:
        return list(read_snapshot(cfg, captions[0])[0])  # distinct already (sorted by key)
    seen: set[str] = set()
    out: list[str] = []
    for manifest in captions:
        shas, _ = read_snapshot(cfg, manifest)
        for sha in shas:
            if sha not in seen:
                seen.add(sha)
                out.append(sha)
    return out


def head_memory_bytes(n_rows: int, text_ns: Any, pivot_ns: Any, train_cfg: Any) -> int:
    """What training a head holds at its peak: the rows in the cache's dtype, the head
    and optimizer, one batch, and one chunk of rows being read (float32)."""
    import numpy as np

    from textme.training import training_memory_bytes

    from tasks.vectors import READ_CHUNK_ROWS

    itemsize = max(np.dtype(text_ns.dtype).itemsize, np.dtype(pivot_ns.dtype).itemsize)
    reading = min(n_rows, READ_CHUNK_ROWS) * max(text_ns.dim, pivot_ns.dim) * 4
    return training_memory_bytes(n_rows, text_ns.dim, pivot_ns.dim, train_cfg, itemsize) + reading


def _warm_start(cfg: PipelineConfig, ws: Workspace, source: str | None):
    """(head, its twin's running mean - its own, or None) to continue from, or (None, None)."""
    if source is None:
        return None, None
    import numpy as np

    from textme import load_projection

    m = read_manifest(ws, source)
    if m is None:
        raise FileNotFoundError(f"warm start: the manifest of head {source} is gone from {ws.manifests}; "
                                "set training.warm_start: false or run again")
    head = load_projection(checked_head(cfg, m))
    shift = None
    if m.get("uncentred_running_mean"):
        shift = np.load(_checked_twin(cfg, m)) - head.mlps[1].running_mean.numpy()
    return head, shift


def _checked_twin(cfg: PipelineConfig, m: dict[str, Any]) -> Path:
    """The uncentred twin's running mean file of a centred train manifest, checked."""
    return check_file(m["uncentred_running_mean"], m.get("uncentred_running_mean_sha256"), config=str(cfg.path or "CONFIG"),
                      what=f"stage train of encoder {m.get('encoder')!r}")


def train_head(
    cfg: PipelineConfig,
    encoder: str,
    text: dict[str, Any],
    pivot: dict[str, Any],
    captions: list[dict[str, Any]],
    offset: dict[str, Any] | None,
) -> dict[str, Any]:
    import numpy as np

    from textme import TrainConfig, load_offset, save_projection, train_projection, train_projection_with_uncentred

    from tasks.budget import MEMORY, budget_bytes
    from tasks.embed import namespace_of
    from tasks.vectors import read_rows

    key, inputs = keys.train_spec(cfg, encoder, text, pivot, captions, offset)
    variant = "uncentred" if offset is None else "textme"
    ws = Workspace.of(cfg)
    warm_from = inputs.get("warm_start_from")
    start_head, start_shift = _warm_start(cfg, ws, warm_from)
    train_cfg = TrainConfig(**cfg.training.params)
    if warm_from is not None:
        train_cfg = dataclasses.replace(train_cfg, epochs=cfg.training.warm_start_epochs)
    rows = training_captions(cfg, captions)
    text_ns, pivot_ns = namespace_of(cfg, text), namespace_of(cfg, pivot)
    log = logger()
    need, budget = head_memory_bytes(len(rows), text_ns, pivot_ns, train_cfg), budget_bytes(cfg.training.memory_budget_gb)
    with MEMORY.reserve(need, budget) as alone:
        if alone:
            log.warning("train %s (%s): needs about %.2f GB (%d rows x %d + %d dims), more than "
                        "training.memory_budget_gb (%.2f GB): it runs alone", encoder, variant, need / 2**30,
                        len(rows), text_ns.dim, pivot_ns.dim, budget / 2**30)
        started_at = now()
        x, y = read_rows(text_ns, rows), read_rows(pivot_ns, rows)
        mu_text = None if offset is None else load_offset(
            checked_offset_dir(cfg, offset["dir"], offset.get("sha256"), encoder)).text_mean
        log.info("train %s (%s): %d captions, %d -> %d dims, %d epochs%s", encoder, variant, len(rows), x.shape[1],
                 y.shape[1], train_cfg.epochs, f", warm start from {warm_from}" if warm_from else "")
        with stage_progress(f"train {encoder} ({variant})", train_cfg.epochs, "epochs") as bar:
            def epoch_done(h: dict[str, Any]) -> None:
                log.info("train %s (%s): epoch %d/%d loss %.4f lr %.2e (%.2fs)", encoder, variant, h["epoch"],
                         train_cfg.epochs, h["loss"], h["lr"], h["seconds"])
                bar.update(h["epoch"], loss=h["loss"])

            twin = None
            if mu_text is None:
                head, history = train_projection(x, y, offset=None, config=train_cfg, progress=epoch_done)
            else:
                head, twin, history = train_projection_with_uncentred(
                    x, y, offset=mu_text, config=train_cfg, progress=epoch_done, init=start_head,
                    init_shift=start_shift)
        del x, y
        finished_at = now()
    path = ws.projection(key)
    twin_file = None
    if twin is not None:
        twin_file = path.with_name(path.stem + TWIN_SUFFIX)
        _save_array(twin_file, twin.mlps[1].running_mean.detach().cpu().numpy().astype(np.float32))
    save_projection(
        head.cpu(), path,
        encoder=encoder, variant=variant, stage_key=key,
        text_namespace=text["namespace"], pivot_namespace=pivot["namespace"],
        offset_fp=None if offset is None else offset["offset_fp"],
        captions=[c["captions_fp"] for c in captions],
        train_config=train_cfg.to_dict(), epochs=train_cfg.epochs,
        final_loss=history[-1]["loss"], n_train=len(rows), warm_start_from=warm_from,
    )
    _training_rows(cfg, key, encoder, variant, history)
    log.info("train %s (%s): final loss %.4f", encoder, variant, history[-1]["loss"])
    manifest = {
        "stage": "train",
        "encoder": encoder,
        "variant": variant,
        "projection_fp": key,
        "path": str(path),
        "sha256": sha256_file(path),
        "offset_fp": None if offset is None else offset["offset_fp"],
        "offset_dir": None if offset is None else offset["dir"],
        "offset_sha256": None if offset is None else offset["sha256"],
        "captions": [c["captions_fp"] for c in captions],
        "n_train": len(rows),
        "history": [{"epoch": int(h["epoch"]), "loss": float(h["loss"]), "lr": float(h["lr"])} for h in history],
        "train_inputs": keys.train_inputs(cfg, encoder, text, pivot, captions, offset),
        "warm_start_from": warm_from,
        "warm_start_epochs": train_cfg.epochs if warm_from else None,
        "uncentred_running_mean": None if twin_file is None else str(twin_file),
        "uncentred_running_mean_sha256": None if twin_file is None else sha256_file(twin_file),
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
    }
    return write_manifest(ws, key, manifest)


def derive_uncentred(
    cfg: PipelineConfig,
    encoder: str,
    text: dict[str, Any],
    pivot: dict[str, Any],
    captions: list[dict[str, Any]],
    centred: dict[str, Any],
) -> dict[str, Any]:
    """The uncentred ablation head of a centred one: its weights, its twin's first
    running mean; trained on raw text only when the centred head kept no twin."""
    import numpy as np
    import torch

    from textme import load_projection, read_projection_metadata, save_projection

    if not centred.get("uncentred_running_mean"):
        return train_head(cfg, encoder, text, pivot, captions, None)
    key = keys.uncentred_key(cfg, encoder, text, pivot, captions, centred)
    head = load_projection(checked_head(cfg, centred))
    with torch.no_grad():
        head.mlps[1].running_mean.copy_(torch.from_numpy(np.load(_checked_twin(cfg, centred))))
    meta = read_projection_metadata(centred["path"])["metadata"]
    ws = Workspace.of(cfg)
    path = ws.projection(key)
    save_projection(head, path, **{**meta, "variant": "uncentred", "stage_key": key, "offset_fp": None,
                                   "derived_from": centred["projection_fp"]})
    history = centred["history"]
    _training_rows(cfg, key, encoder, "uncentred", [{**h, "seconds": 0.0} for h in history])
    logger().info("train %s (uncentred): derived from the centred head %s (no second training)", encoder,
                  centred["projection_fp"])
    manifest = {
        **{k: centred[k] for k in ("encoder", "captions", "n_train", "history", "warm_start_from",
                                   "warm_start_epochs") if k in centred},
        "stage": "train",
        "variant": "uncentred",
        "projection_fp": key,
        "path": str(path),
        "sha256": sha256_file(path),
        "offset_fp": None,
        "offset_dir": None,
        "derived_from": centred["projection_fp"],
        "train_inputs": keys.train_inputs(cfg, encoder, text, pivot, captions, None),
        "finished_at": now().isoformat(),
    }
    return write_manifest(ws, key, manifest)


def _training_rows(cfg: PipelineConfig, key: str, encoder: str, variant: str, history: list[dict[str, Any]]) -> None:
    open_tables(cfg).append(
        "training",
        [{"run_id": current_run_id(), "projection_fp": key, "encoder": encoder, "variant": variant,
          "epoch": int(h["epoch"]), "loss": float(h["loss"]), "lr": float(h["lr"]),
          "seconds": float(h.get("seconds", 0.0))} for h in history],
        part=key,
    )


def _save_array(path: Path, array: Any) -> None:
    import io

    import numpy as np

    from tasks.workspace import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def _run_name() -> str:
    from prefect.runtime import task_run

    params = task_run.parameters
    return f"train-{params['encoder']}-{'uncentred' if params.get('offset') is None else 'centred'}"


@task(name="train", task_run_name=_run_name, cache_policy=checked(keys.train_key_fn), **GPU_STAGE_OPTIONS)
def train(
    config: str,
    encoder: str,
    text: dict[str, Any],
    pivot: dict[str, Any],
    captions: list[dict[str, Any]],
    offset: dict[str, Any] | None,
) -> dict[str, Any]:
    """Prefect task: text/pivot = embed manifests, captions = ingest manifests of
    train_on, offset = the offsets manifest (None: an uncentred head trained on raw text)."""
    from tasks.gpu import gpu_slot

    with gpu_slot():  # the body runs only on a cache miss: a cached head never waits
        return train_head(keys.load_snapshot(config), encoder, text, pivot, captions, offset)


@task(name="uncentred", task_run_name="train-{encoder}-uncentred", cache_policy=checked(keys.uncentred_key_fn),
      **STAGE_OPTIONS)
def uncentred(
    config: str,
    encoder: str,
    text: dict[str, Any],
    pivot: dict[str, Any],
    captions: list[dict[str, Any]],
    centred: dict[str, Any],
) -> dict[str, Any]:
    """Prefect task: the uncentred ablation head of `centred` (the centred train manifest)."""
    from contextlib import nullcontext

    from tasks.gpu import gpu_slot

    trains = not centred.get("uncentred_running_mean")  # no twin kept: trained on raw text, on the GPU
    with gpu_slot() if trains else nullcontext():
        return derive_uncentred(keys.load_snapshot(config), encoder, text, pivot, captions, centred)
