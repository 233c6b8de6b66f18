"""Stage 4, train: a projection head per encoder, from cached vectors only.

Reads the encoder's text vectors and the pivot's vectors of the same captions from the
cache (no encoder runs here: 50 epochs never touch a model), centres the text side
with mu_text, and calls `textme.train_projection`. The head is saved with
`textme.save_projection` as projections/<fp>.pt (fp = this stage's key), its per-epoch
history as `training` rows. Each epoch's loss is logged as it ends (and drawn on a
progress bar in a terminal, tasks/progress.py). With `centred=False` (the ablation) no
offset is used.

The text vectors are what the encoder's `normalize` setting made them (unit rows, or
the model's raw outputs as the official CLIP wrapper trains on), through the text
namespace in the key. An encoder with `train: false` has no train stage.
"""

from __future__ import annotations

from typing import Any

from prefect import task

from tasks import keys
from tasks.cache_policy import checked
from tasks.common import GPU_STAGE_OPTIONS, current_run_id, logger, open_tables, write_manifest
from tasks.config import PipelineConfig
from tasks.integrity import checked_offset_dir, sha256_file
from tasks.progress import stage_progress
from tasks.workspace import Workspace

__all__ = ["train", "train_head", "training_captions"]


def training_captions(cfg: PipelineConfig, captions: list[dict[str, Any]]) -> list[str]:
    """Distinct caption keys of the snapshots, in snapshot order (the training rows)."""
    from tasks.ingest import read_snapshot

    seen: set[str] = set()
    out: list[str] = []
    for manifest in captions:
        shas, _ = read_snapshot(cfg, manifest)
        for sha in shas:
            if sha not in seen:
                seen.add(sha)
                out.append(sha)
    return out


def train_head(
    cfg: PipelineConfig,
    encoder: str,
    text: dict[str, Any],
    pivot: dict[str, Any],
    captions: list[dict[str, Any]],
    offset: dict[str, Any] | None,
) -> dict[str, Any]:
    from textme import TrainConfig, load_offset, save_projection, train_projection

    from tasks.embed import namespace_of

    key = keys.train_key(cfg, encoder, text, pivot, captions, offset)
    variant = "uncentred" if offset is None else "textme"
    rows = training_captions(cfg, captions)
    x = namespace_of(cfg, text).get(rows)
    y = namespace_of(cfg, pivot).get(rows)
    mu_text = None if offset is None else load_offset(
        checked_offset_dir(cfg, offset["dir"], offset.get("sha256"), encoder)).text_mean
    train_cfg = TrainConfig(**cfg.training.params)
    log = logger()
    log.info("train %s (%s): %d captions, %d -> %d dims, %d epochs",
             encoder, variant, len(rows), x.shape[1], y.shape[1], train_cfg.epochs)
    with stage_progress(f"train {encoder} ({variant})", train_cfg.epochs, "epochs") as bar:
        def epoch_done(h: dict[str, Any]) -> None:
            log.info("train %s (%s): epoch %d/%d loss %.4f lr %.2e (%.2fs)", encoder, variant, h["epoch"],
                     train_cfg.epochs, h["loss"], h["lr"], h["seconds"])
            bar.update(h["epoch"], loss=h["loss"])

        head, history = train_projection(x, y, offset=mu_text, config=train_cfg, progress=epoch_done)
    ws = Workspace.of(cfg)
    path = ws.projection(key)
    save_projection(
        head.cpu(), path,
        encoder=encoder, variant=variant, stage_key=key,
        text_namespace=text["namespace"], pivot_namespace=pivot["namespace"],
        offset_fp=None if offset is None else offset["offset_fp"],
        captions=[c["captions_fp"] for c in captions],
        train_config=train_cfg.to_dict(), epochs=train_cfg.epochs,
        final_loss=history[-1]["loss"], n_train=len(rows),
    )
    run_id = current_run_id()
    open_tables(cfg).append(
        "training",
        [{"run_id": run_id, "projection_fp": key, "encoder": encoder, "variant": variant,
          "epoch": int(h["epoch"]), "loss": float(h["loss"]), "lr": float(h["lr"]),
          "seconds": float(h["seconds"])} for h in history],
        part=key,
    )
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
    }
    return write_manifest(ws, key, manifest)


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
    train_on, offset = the offsets manifest (None: the uncentred ablation)."""
    return train_head(keys.load_snapshot(config), encoder, text, pivot, captions, offset)
