"""The `textme` command: one-line errors that write nothing, status, query, search, cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks.config import load_config
from tests.pipeline.helpers import K_EDITED, EncodeCounter, write_mini_config

TEXTME = str(Path(sys.executable).parent / "textme")
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


# --------------------------------------------------------------------------- errors


def broken(tmp_path: Path, assets: Path, how: str) -> Path:
    config = write_mini_config(tmp_path / "cfg", assets)
    data = yaml.safe_load(config.read_text())
    if how == "unknown field":
        data["training"]["epoch"] = 3
    elif how == "missing file":
        data["datasets"]["scenes_audio"]["source"] = "data/nowhere.jsonl"
    elif how == "empty column":
        (config.parent / "data" / "scenes_point.jsonl").write_text('{"caption_id": "a", "caption": "  "}\n')
    elif how == "missing column":
        data["datasets"]["scenes_image"]["text_column"] = "text"
    elif how == "missing manifest":
        data["evaluation"][0]["manifest"] = "eval/absent.jsonl"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


@pytest.mark.parametrize(
    "how, message",
    [
        ("unknown field", "training.epoch: unknown field (known: "),
        ("missing file", "nowhere.jsonl: caption source not found"),
        ("empty column", "scenes_point.jsonl: caption column 'caption' is empty (only empty values in 1 rows)"),
        ("missing column", "scenes_image.jsonl: no caption column 'text' (columns: caption_id, caption)"),
        ("missing manifest", "absent.jsonl: evaluation manifest not found"),
    ],
)
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, assets, how, message):
    config = broken(tmp_path, assets, how)
    workdir = config.parent / "work"
    proc = subprocess.run([TEXTME, "run", str(config)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert proc.stdout == ""
    assert not workdir.exists()  # no cache, no tables, nothing


def test_the_command_ends_with_its_status_and_everything_it_printed(tmp_path):
    """The console script skips the interpreter's teardown (flows/cli.py `main`): its
    exit status and output are still those of the command."""
    listed = subprocess.run([TEXTME, "manifest", "--list"], capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and listed.stdout == invoke("manifest", "--list").stdout
    assert listed.stdout.count("\n") > 5
    missing = subprocess.run([TEXTME, "query", str(tmp_path / "absent.yaml"), "select 1"], capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and missing.stdout == ""
    usage = subprocess.run([TEXTME, "run"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and "Missing argument 'config'" in usage.stderr


# --------------------------------------------------------------------------- status


def test_status_json_all_cached_with_counts_and_no_model_use(pipeline_runs, monkeypatch):
    counter = EncodeCounter(monkeypatch)
    result = invoke("status", pipeline_runs["config"], "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {s["status"] for s in report["stages"]} == {"cached"}
    stages = {(s["stage"], s["unit"]) for s in report["stages"]}
    assert ("train", "toy_image/uncentred") in stages and ("evaluate", "mixed_search") in stages
    counts = {(n["encoder"], n["tower"]): n["count"] for n in report["namespaces"]}
    # the pivot embedded 3 x 120 captions once, plus the k edited ones
    assert counts[("pivot", "text")] == 3 * 120 + K_EDITED
    assert all(counts[(e, t)] > 0 for e in ("toy_image", "toy_audio", "toy_point") for t in ("text", "modal"))
    assert report["runs"][-1]["status"] == "completed"
    assert counter.total() == 0


def test_status_marks_stale_stages_after_a_source_change(pipeline_runs):
    config = pipeline_runs["config"]
    source = Path(load_config(config).datasets["scenes_audio"].source)
    original = source.read_text()
    try:
        source.write_text(original.replace('"caption": "', '"caption": "now ', 1))
        report = json.loads(invoke("status", config, "--json").stdout)
    finally:
        source.write_text(original)
    status = {(s["stage"], s["unit"]): s["status"] for s in report["stages"]}
    assert status[("ingest", "scenes_audio")] == "stale"
    assert status[("embed", "pivot/text")] == "stale"
    assert status[("embed", "toy_audio/text")] == "stale"
    assert status[("train", "toy_audio/textme")] == "stale"
    assert status[("embed", "toy_image/text")] == "cached"
    assert status[("ingest", "scenes_image")] == "cached"
    assert report["summary"]["stale"] > 0


def test_status_text_output(pipeline_runs):
    result = invoke("status", pipeline_runs["config"])
    assert result.exit_code == 0
    assert "Pipeline status" in result.stdout and "cached" in result.stdout and "Embedding cache" in result.stdout


# --------------------------------------------------------------------------- query


def test_query_takes_the_config_first_and_keeps_the_old_options(pipeline_runs):
    config = pipeline_runs["config"]
    result = invoke("query", config, "select count(distinct run_id) as runs from results")
    assert result.exit_code == 0, result.output
    assert " 3 " in result.stdout  # cold, warm, edited
    assert "stand_in = true" in result.stdout  # toy encoders: the numbers say so
    alias = invoke("query", "select count(distinct run_id) as runs from results", "--config", config)
    assert alias.exit_code == 0 and alias.stdout == result.stdout
    result = invoke("query", "select 1", "--catalog", Path(load_config(config).workdir) / "catalog.duckdb")
    assert result.exit_code == 0 and "stand_in" not in result.stdout


def test_query_errors_are_one_line(pipeline_runs):
    config = pipeline_runs["config"]
    for sql, start in (("create table x as select 1", "error: query refused"),
                       ("select * from no_such_table", "error: query failed")):
        result = invoke("query", config, sql)
        assert result.exit_code == 2
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(start), result.stderr
    assert invoke("query", "select 1").exit_code == 2  # no config
    assert invoke("query", config).exit_code == 2  # no SQL
    assert invoke("query", config, "select 1", "--config", config).exit_code == 2  # the SQL twice


# --------------------------------------------------------------------------- search


def test_search_ranks_items_of_every_modality(pipeline_runs):
    # more in tests/pipeline/test_search.py (file queries, the index stage, ANN)
    from tasks.search import search

    cfg = load_config(pipeline_runs["config"])
    res = search(cfg, "a red dog in a park", k=8)
    assert res.stand_in and len(res.hits) == 8 and not res.missing
    assert [h.score for h in res.hits] == sorted((h.score for h in res.hits), reverse=True)
    assert all(Path(h.item).is_file() for h in res.hits)
    assert {h.modality for h in search(cfg, "a red dog in a park", k=10_000).hits} == {"image", "audio", "point"}
    assert {h.modality for h in search(cfg, "a red dog in a park", modality="audio", k=5).hits} == {"audio"}

    result = invoke("search", pipeline_runs["config"], "a red dog", "--modality", "point", "--top", "3")
    assert result.exit_code == 0 and "point" in result.stdout and "stand-in" in result.stdout
    result = invoke("search", pipeline_runs["config"], "a red dog", "--modality", "smell")
    assert result.exit_code == 2 and "no index of modality 'smell'" in result.stderr


# --------------------------------------------------------------------------- cache


def test_cache_verify_and_gc(pipeline_runs):
    from storage.cache import EmbeddingCache

    config = pipeline_runs["config"]
    cfg = load_config(config)
    assert invoke("cache", "verify", config).exit_code == 0

    cache = EmbeddingCache(cfg.cache)
    orphan = cache.namespace({"adapter": "retired-model", "tower": "text"}, dim=4)
    orphan.put(["k1"], [[1.0, 0.0, 0.0, 0.0]])
    before = {info.id for info in cache.namespaces()}
    from tasks.status import index_namespaces

    current = index_namespaces(cfg)
    # the search indexes of heads trained before the captions were edited are garbage too
    old_indexes = {i.id for i in cache.namespaces() if "index" in i.identity} - current
    assert current and old_indexes and current <= before

    dry = invoke("cache", "gc", config, "--dry-run")
    assert dry.exit_code == 0 and f"would remove namespace {orphan.id[:16]}" in dry.stdout
    assert {info.id for info in EmbeddingCache(cfg.cache).namespaces()} == before

    done = invoke("cache", "gc", config)
    assert done.exit_code == 0 and f"removed namespace {orphan.id[:16]}" in done.stdout
    assert {info.id for info in EmbeddingCache(cfg.cache).namespaces()} == before - {orphan.id} - old_indexes
    report = json.loads(invoke("status", config, "--json").stdout)
    assert {s["status"] for s in report["stages"]} == {"cached"}  # the config's own data stayed


def test_evaluate_with_an_unknown_entry_is_one_line_before_any_flow(pipeline_runs):
    result = invoke("evaluate", pipeline_runs["config"], "--only", "image_retrieval", "--only", "nope")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown evaluation 'nope' (known: image_retrieval, " in lines[0]
    assert result.stdout == ""
