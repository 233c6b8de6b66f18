"""The pipeline flow end to end on a real (temporary) Prefect server, with a mini config:
a cold run, a warm re-run of the same config, then a re-run after k captions changed.

The three runs happen once (the session fixture `pipeline_runs`, in order); each test
asserts one property.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from tasks.workspace import Workspace
from tests.pipeline.helpers import K_EDITED, rows


def test_cold_run_writes_results_with_lineage(pipeline_runs):
    cfg, got = pipeline_runs["cfg"], rows(pipeline_runs["cfg"], "results", pipeline_runs["cold"])
    assert {r["task"] for r in got} == {"retrieval", "classification", "emergent", "mixed_search"}
    assert {r["variant"] for r in got} == {"textme", "uncentred", "native", "chance"}
    assert all(r["stand_in"] for r in got)  # toy models only: every row says so
    for r in got:
        assert r["config_fp"] and r["code_version"] and r["source_identity_fp"] and r["target_identity_fp"]
        if r["variant"] == "textme":
            assert r["captions_fp"] and r["projection_fp"] and r["offset_fp"]
            for fp in r["projection_fp"].split(","):
                assert Workspace.of(cfg).projection(fp).is_file()
    retrieval = {(r["variant"], r["metric"]): r["value"] for r in got if r["eval_name"] == "image_retrieval"}
    assert retrieval[("chance", "R@1")] == pytest.approx(100 / 30)
    assert 0 <= retrieval[("textme", "R@1")] <= 100


def test_cold_run_fills_catalog_runs_and_artifacts(pipeline_runs):
    cfg = pipeline_runs["cfg"]
    con = duckdb.connect(str(Workspace.of(cfg).catalog), read_only=True)
    try:
        n = con.execute("select count(*) from results where run_id = ?", [pipeline_runs["cold"]]).fetchone()[0]
        statuses = con.execute("select status from runs where run_id = ? order by finished_at nulls first",
                               [pipeline_runs["cold"]]).fetchall()
        trained = con.execute("select count(distinct projection_fp) from training").fetchone()[0]
    finally:
        con.close()
    assert n == len(rows(cfg, "results", pipeline_runs["cold"])) > 0
    assert [s for (s,) in statuses] == ["completed"]  # one row per run: its latest status
    assert trained >= 6  # 3 encoders x (centred, uncentred)

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts() if a.key}
        results_md = client.read_latest_artifacts()
    assert {"textme-results-mini", "textme-training-mini"} <= keys
    table = next(a for a in results_md if a.key == "textme-results-mini")
    assert table.type == "table" and "stand-in models" in table.description
    data = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert any(r["evaluation"] == "image_retrieval" and r["metric"] == "R@1" and r["textme"] != "" for r in data)
    assert all(r["stand_in"] for r in data)


def test_warm_run_encodes_nothing_and_every_stage_is_a_cache_hit(pipeline_runs):
    # how much faster that makes it: benchmarks/bench_warm_run.py
    cfg = pipeline_runs["cfg"]
    assert pipeline_runs["cold_encoded"] > 0
    assert pipeline_runs["warm_encoded"] == 0  # no forward pass at all
    assert all(r["n_computed"] == 0 for r in rows(cfg, "embed_log", pipeline_runs["warm"]))
    # every expensive stage was a Prefect cache hit
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[pipeline_runs["warm"]])),
                                          task_run_filter=TaskRunFilter())
    stages = {tr.name.rsplit("-", 1)[0] if tr.name.startswith("results") else tr.name: tr.state.name
              for tr in task_runs}
    # results and report are not cached by design: every run records its rows and its report
    cached = {n: s for n, s in stages.items() if not n.startswith(("results", "prepare", "report"))}
    assert cached and set(cached.values()) == {"Cached"}, stages
    cold = {(r["eval_name"], r["variant"], r["metric"]): r["value"] for r in rows(cfg, "results", pipeline_runs["cold"])}
    warm = {(r["eval_name"], r["variant"], r["metric"]): r["value"] for r in rows(cfg, "results", pipeline_runs["warm"])}
    assert warm == cold


def test_edited_captions_cost_exactly_k_vectors_per_text_tower(pipeline_runs):
    cfg = pipeline_runs["cfg"]
    log = rows(cfg, "embed_log", pipeline_runs["edit"])
    computed: dict[tuple[str, str], int] = {}
    for r in log:
        computed[(r["encoder"], r["tower"])] = computed.get((r["encoder"], r["tower"]), 0) + r["n_computed"]
    # scenes_image feeds the pivot and toy_image's text tower; nothing else changed
    assert computed.get(("pivot", "text")) == K_EDITED
    assert computed.get(("toy_image", "text")) == K_EDITED
    assert sum(computed.values()) == 2 * K_EDITED, computed
    assert pipeline_runs["edit_encoded"] == {"text": 2 * K_EDITED}


def test_edited_run_records_the_new_captions_fingerprint(pipeline_runs):
    cfg = pipeline_runs["cfg"]
    from tasks.common import read_manifest
    from tasks.keys import ingest_key

    new_fp = read_manifest(Workspace.of(cfg), ingest_key(cfg, "scenes_image"))["captions_fp"]
    before = {r["captions_fp"] for r in rows(cfg, "results", pipeline_runs["cold"])
              if r["eval_name"] == "image_retrieval" and r["variant"] == "textme"}
    after = {r["captions_fp"] for r in rows(cfg, "results", pipeline_runs["edit"])
             if r["eval_name"] == "image_retrieval" and r["variant"] == "textme"}
    assert after == {new_fp} and before != after
    untouched = {r["captions_fp"] for r in rows(cfg, "results", pipeline_runs["edit"])
                 if r["eval_name"] == "point_classification" and r["variant"] == "textme"}
    assert untouched == {r["captions_fp"] for r in rows(cfg, "results", pipeline_runs["cold"])
                         if r["eval_name"] == "point_classification" and r["variant"] == "textme"}
