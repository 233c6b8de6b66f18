"""The TextME pipeline as a Prefect flow. Reads top-down as the DAG:

    ingest (per dataset)
      -> embed: pivot texts | per encoder: text tower, modal items   (fan out)
      -> offsets (per encoder) -> train (per encoder) -> uncentred ablation (derived, not trained)
                               -> released (per encoder with a `released:` head)
      -> evaluate (per evaluation entry)                             (join)
      -> index (per encoder: its corpus in the pivot space, for `textme search`)
      -> results (one writer: results table, DuckDB catalog, artifacts)
      -> report (plots + HTML page under <workdir>/reports/<run>/; never fails the run)

An encoder with `train: false` has no train stage, and no text/items embedding or
offsets of its own unless its released head needs our offsets (`released.offset:
null`) or `offset_dataset` asks for them. Tasks get the path of the resolved config
snapshot and small manifests; every cached
task's key comes from tasks/keys.py, so a re-run with nothing changed is all cache hits
and a changed caption costs one vector per tower.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, unmapped

from tasks.common import logger, now, with_workspace
from tasks.config import PipelineConfig, config_to_dict, load_config
from tasks.demo_assets import prepare_demo_assets
from tasks.embed import embed_items, embed_texts
from tasks.evaluate import evaluate
from tasks.failures import result_or_first_failure
from tasks.index import index, index_head, indexable
from tasks.ingest import ingest
from tasks.keys import config_fingerprint
from tasks.offsets import compute_offsets
from tasks.released import released
from tasks.report.stage import run_report
from tasks.results import record_run, write_results
from tasks.train import train, uncentred
from tasks.validate import pivot_datasets, preflight, text_datasets, used_datasets
from tasks.workspace import Workspace, atomic_write_text

__all__ = ["pipeline", "run_pipeline_dag", "prepare", "write_snapshot"]


def write_snapshot(cfg: PipelineConfig, config_fp: str) -> str:
    """Store the resolved config as configs/<fp>.json (what every task loads)."""
    path = Workspace.of(cfg).config_snapshot(config_fp)
    if not path.is_file():
        atomic_write_text(path, json.dumps(config_to_dict(cfg), indent=1, sort_keys=True))
    return str(path)


def prepare(config: str) -> tuple[PipelineConfig, str, str]:
    """Load + validate the config, build demo assets if asked, check every input, and
    write the snapshot: (cfg, snapshot path, config fingerprint). Nothing reaches the
    cache or the tables before every check has passed."""
    cfg = load_config(config)
    if cfg.demo:
        prepare_demo_assets(cfg.workdir)
    preflight(cfg, assets_ready=True)
    config_fp = config_fingerprint(cfg)
    removed = Workspace.of(cfg).remove_stale_temp_files()
    if removed:
        logger().info("removed %d temporary files a killed run left behind (%s)", len(removed),
                      ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else ""))
    return cfg, write_snapshot(cfg, config_fp), config_fp


def run_pipeline_dag(cfg: PipelineConfig, snapshot: str, config_fp: str) -> dict[str, Any]:
    ws = Workspace.of(cfg)
    t_ingest, t_embed_texts, t_embed_items, t_offsets, t_train, t_uncentred, t_released, t_evaluate, t_index = (
        with_workspace(t, ws)
        for t in (ingest, embed_texts, embed_items, compute_offsets, train, uncentred, released, evaluate, index)
    )

    datasets = used_datasets(cfg)
    captions = dict(zip(datasets, t_ingest.map(unmapped(snapshot), datasets)))

    trained = pivot_datasets(cfg)  # empty when every encoder only evaluates released heads
    pivot = t_embed_texts.submit(snapshot, "pivot", "text", [captions[d] for d in trained]) if trained else None
    own = [e for e, entry in cfg.encoders.items() if entry.own_offsets]
    text = {e: t_embed_texts.submit(snapshot, e, "text", [captions[d] for d in text_datasets(cfg, e)])
            for e in cfg.encoders if text_datasets(cfg, e)}
    modal = {e: t_embed_items.submit(snapshot, e) for e in own}

    offsets = {e: t_offsets.submit(snapshot, e, text[e], modal[e], captions[cfg.encoders[e].offset_dataset])
               for e in own}
    heads = {}
    for e, entry in cfg.encoders.items():
        train_captions = [captions[d] for d in entry.train_on] if entry.train else []
        centred = t_train.submit(snapshot, e, text[e], pivot, train_captions, offsets[e]) if entry.train else None
        heads[e] = {
            "offset": offsets.get(e),
            "textme": centred,
            "uncentred": (  # derived from the centred run: no second training
                t_uncentred.submit(snapshot, e, text[e], pivot, train_captions, centred)
                if entry.train and cfg.training.ablate_centring
                else None
            ),
            "released": (
                t_released.submit(snapshot, e, None if entry.has_released_offset else offsets[e])
                if entry.released is not None
                else None
            ),
        }

    evaluations = [
        t_evaluate.submit(snapshot, spec.name, {e: heads[e] for e in spec.encoders()}, pivot)
        for spec in cfg.evaluation
    ]
    results = write_results.submit(snapshot, evaluations, heads, config_fp)
    # After evaluation (the DAG's order): the evaluations have embedded their items, so
    # the index only projects.
    indexes = {e: t_index.submit(snapshot, e, index_head(heads[e], entry.train), modal.get(e), wait_for=evaluations)
               for e, entry in cfg.encoders.items() if indexable(cfg, e)}
    # A failed stage is reported as itself, not as the PENDING stages after it.
    upstream = [captions, pivot, text, modal, offsets, heads, evaluations, indexes]
    summary = result_or_first_failure(results, upstream)
    summary["index"] = {e: result_or_first_failure(f, upstream)["n_items"] for e, f in indexes.items()}
    summary["report"] = run_report.submit(snapshot).result()  # None if it could not be drawn (logged)
    return summary


@flow(name="textme-pipeline", log_prints=True)
def pipeline(config: str) -> dict[str, Any]:
    """Run TextME end to end for one config file (cached, resumable, fanned out)."""
    started = now()
    cfg, snapshot, config_fp = prepare(config)
    record_run(cfg, flow="textme-pipeline", status="running", config_fp=config_fp, started=started)
    try:
        summary = run_pipeline_dag(cfg, snapshot, config_fp)
    except BaseException:
        record_run(cfg, flow="textme-pipeline", status="failed", config_fp=config_fp, started=started, finished=now())
        raise
    record_run(cfg, flow="textme-pipeline", status="completed", config_fp=config_fp, started=started,
               finished=now())
    return {**summary, "config_fp": config_fp, "name": cfg.name}


if __name__ == "__main__":  # python -m flows.pipeline CONFIG
    import sys

    pipeline(sys.argv[1])
