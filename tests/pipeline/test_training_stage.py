"""The train stage in the pipeline: memory budget, derived uncentred heads, warm starts,
snapshots read once per run (one mini config, run three times in order: cold with a
tiny memory budget; warm-start after captions of one dataset were edited; unchanged)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml

from tasks.workspace import Workspace
from tests.pipeline.helpers import MODALITIES, rows, run_pipeline, write_mini_config


def _train_manifests(cfg, variant: str) -> dict[str, dict]:
    out = {}
    for _, m in Workspace.of(cfg).stage_manifests():
        if m.get("stage") == "train" and m["variant"] == variant:
            out.setdefault(m["encoder"], []).append(m)
    return out


def _latest(cfg, run_id: str, variant: str) -> dict[str, dict]:
    """{encoder: the train manifest of the head `run_id`'s results used}."""
    fps = {fp for r in rows(cfg, "results", run_id) if r["variant"] == variant
           for fp in r["projection_fp"].split(",")}  # emergent rows name two heads
    return {m["encoder"]: m for ms in _train_manifests(cfg, variant).values() for m in ms if m["projection_fp"] in fps}


@pytest.fixture(scope="module")
def runs(prefect_api, assets, tmp_path_factory):
    from tasks.config import load_config
    from tasks.ingest import snapshot_reads

    config = write_mini_config(tmp_path_factory.mktemp("training") / "mini", assets, epochs=3)
    doc = yaml.safe_load(config.read_text())
    # ~1 KB: smaller than any head, so each head runs alone (with a warning)
    doc["training"].update({"memory_budget_gb": 1e-6, "warm_start": True, "warm_start_epochs": 1})
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(config)
    out = {"cfg": cfg}
    before = snapshot_reads()
    out["cold"] = run_pipeline(config)
    out["cold_reads"] = snapshot_reads() - before
    out["cold_centred"] = _latest(cfg, out["cold"], "textme")
    source = Path(cfg.datasets["scenes_image"].source)
    lines = source.read_text().splitlines()
    for i in range(3):
        row = json.loads(lines[i])
        row["caption"] += f" (edited {i})"
        lines[i] = json.dumps(row)
    source.write_text("\n".join(lines) + "\n")
    out["edit"] = run_pipeline(config)
    out["again"] = run_pipeline(config)
    return out


def test_a_small_budget_keeps_heads_from_training_at_the_same_time(runs):
    spans = sorted((datetime.fromisoformat(m["started_at"]), datetime.fromisoformat(m["finished_at"]))
                   for m in runs["cold_centred"].values())
    assert len(spans) == 3
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, spans


def test_each_snapshot_is_read_once_per_run(runs):
    assert runs["cold_reads"] == len(MODALITIES)  # one per dataset, not one per stage


def test_the_uncentred_head_is_derived_from_the_centred_run(runs):
    from textme import load_projection

    cfg = runs["cfg"]
    centred, uncentred = runs["cold_centred"], _latest(cfg, runs["cold"], "uncentred")
    assert set(uncentred) == set(centred)
    for enc, m in uncentred.items():
        assert m["derived_from"] == centred[enc]["projection_fp"] != m["projection_fp"]
        a, b = load_projection(centred[enc]["path"]).state_dict(), load_projection(m["path"]).state_dict()
        for k in a:
            if k == "mlps.1.running_mean":
                assert not torch.allclose(a[k], b[k], atol=1e-3)
            else:
                assert torch.equal(a[k], b[k]), k
    trained = {r["projection_fp"] for r in rows(cfg, "training", runs["cold"]) if r["variant"] == "uncentred"}
    assert trained == {m["projection_fp"] for m in uncentred.values()}  # history rows kept for the report


def test_edited_captions_warm_start_from_the_previous_head(runs):
    cfg = runs["cfg"]
    cold, edit = runs["cold_centred"], _latest(cfg, runs["edit"], "textme")
    assert edit["toy_image"]["warm_start_from"] == cold["toy_image"]["projection_fp"]
    assert edit["toy_image"]["projection_fp"] != cold["toy_image"]["projection_fp"]
    assert len(edit["toy_image"]["history"]) == 1  # warm_start_epochs, not epochs
    for enc in ("toy_audio", "toy_point"):  # their captions did not change: the same heads
        assert edit[enc]["projection_fp"] == cold[enc]["projection_fp"] and not edit[enc]["warm_start_from"]
    results = rows(cfg, "results", runs["edit"])
    image = [r for r in results if r["eval_name"] == "image_retrieval" and r["variant"] == "textme"]
    assert image and all(r["warm_start_from"] == cold["toy_image"]["projection_fp"] for r in image)
    point = [r for r in results if r["eval_name"] == "point_classification" and r["variant"] == "textme"]
    assert point and all(r["warm_start_from"] is None for r in point)
    assert all(r["warm_start_from"] is None for r in rows(cfg, "results", runs["cold"]))
    uncentred = _latest(cfg, runs["edit"], "uncentred")["toy_image"]
    assert uncentred["derived_from"] == edit["toy_image"]["projection_fp"]


def test_an_unchanged_rerun_reuses_the_warm_head(runs):
    cfg = runs["cfg"]
    edit, again = _latest(cfg, runs["edit"], "textme"), _latest(cfg, runs["again"], "textme")
    assert {e: m["projection_fp"] for e, m in again.items()} == {e: m["projection_fp"] for e, m in edit.items()}
    assert not rows(cfg, "training", runs["again"])  # nothing trained


def test_status_replays_the_warm_and_derived_keys(runs):
    from tasks.plan import replay

    rep = replay(runs["cfg"])
    train = [s for s in rep.stages if s.stage == "train"]
    assert len(train) == 6 and all(s.status == "cached" for s in train), [(s.unit, s.status) for s in train]
