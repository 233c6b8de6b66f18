"""The index stage and `textme search`: any modality in, every modality out, from the index.

On the shipped demo (tests/pipeline/conftest.py `demo_pipeline`), run a second time to
see the index stage hit Prefect's cache. Its tiny_clip and tiny_clap read PNGs and WAVs
as toy_image and toy_audio do, so a file query needs `--encoder`. Queries are items of
the demo's emergent audio->image evaluation: the clip and the image of one scene were
never paired in training, so their rank in each other's results measures the emergent
alignment against chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.config import load_config
from tests.pipeline.helpers import run_pipeline, write_mini_config

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def indexed(demo_pipeline):
    config = demo_pipeline["config"]
    cfg = load_config(config)
    warm = run_pipeline(config)
    manifest = Path(cfg.evaluation_by_name("audio_to_image").manifest)
    pairs = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    pairs = [(str(manifest.parent / p["source_item"]), str(manifest.parent / p["target_item"])) for p in pairs]
    return {"config": config, "cfg": cfg, "cold": demo_pipeline["run_id"], "warm": warm, "pairs": pairs[:40]}


def _rank_of(hits, item: str) -> int:
    """1-based rank of `item` among the hits (which hold the whole index of a modality)."""
    from tasks.sources import cached_file_key

    key = cached_file_key(item)
    return next(i for i, h in enumerate(hits, start=1) if h.key == key)


def _emergent_ranks(cfg, pairs, query_side: int, encoder: str, modality: str) -> tuple[np.ndarray, int]:
    from tasks.search import current_indexes, search

    n_gallery = sum(m["n_items"] for m in current_indexes(cfg)[0].values() if m["modality"] == modality)
    ranks = []
    for pair in pairs:
        res = search(cfg, pair[query_side], encoder=encoder, modality=modality, k=n_gallery)
        assert len(res.hits) == n_gallery and {h.modality for h in res.hits} == {modality}
        ranks.append(_rank_of(res.hits, pair[1 - query_side]))
    return np.array(ranks), n_gallery


@pytest.mark.parametrize("query_side, encoder, modality", [(0, "toy_audio", "image"), (1, "toy_image", "audio")])
def test_a_file_query_ranks_its_emergent_pair_far_above_chance(indexed, query_side, encoder, modality):
    ranks, n = _emergent_ranks(indexed["cfg"], indexed["pairs"], query_side, encoder, modality)
    # a random ranking puts the pair at (n + 1) / 2 on average, and in the top tenth 10% of the time
    chance_rank = (n + 1) / 2
    assert np.median(ranks) < chance_rank / 5, (ranks, n)
    assert np.mean(ranks <= max(1, n // 10)) > 0.5, (ranks, n)


def test_wav_and_image_queries_return_every_modality_through_the_cli(indexed):
    audio, image = indexed["pairs"][0]
    for query, extra in ((audio, ("--encoder", "toy_audio")), (image, ("--encoder", "toy_image"))):
        result = invoke("search", indexed["config"], query, *extra, "--top", "100000", "--json")
        assert result.exit_code == 0, result.stderr
        got = json.loads(result.stdout)
        assert got["kind"] == "file" and got["query_encoder"] == extra[1]
        assert {h["modality"] for h in got["hits"]} == {"image", "audio", "point"}
        scores = [h["score"] for h in got["hits"]]
        assert scores == sorted(scores, reverse=True) and all(Path(h["item"]).is_file() for h in got["hits"])
        # the query file is an item of its own index: it finds itself first (cosine 1)
        assert got["hits"][0]["item"] == query and got["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    table = invoke("search", indexed["config"], audio, "--encoder", "toy_audio", "--top", "3")
    assert table.exit_code == 0 and "toy_audio" in table.stdout and "stand-in" in table.stdout


def test_a_text_query_ranks_every_modality(indexed):
    from tasks.search import search

    cfg = indexed["cfg"]
    res = search(cfg, "a red dog in a park", k=8)
    assert res.kind == "text" and res.query_encoder == "pivot" and res.stand_in and len(res.hits) == 8
    assert [h.score for h in res.hits] == sorted((h.score for h in res.hits), reverse=True)
    everything = search(cfg, "a red dog in a park", k=100_000)
    assert {h.modality for h in everything.hits} == {"image", "audio", "point"}
    assert {h.modality for h in search(cfg, "a red dog", modality="audio", k=5).hits} == {"audio"}
    result = invoke("search", indexed["config"], "a red dog", "--modality", "point", "--top", "3")
    assert result.exit_code == 0 and "point" in result.stdout
    result = invoke("search", indexed["config"], "a red dog", "--modality", "smell")
    assert result.exit_code == 2 and "no index of modality 'smell'" in result.stderr


def test_an_ambiguous_file_type_is_one_line_naming_the_candidates(indexed):
    image = indexed["pairs"][0][1]
    result = invoke("search", indexed["config"], image)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert "read by 2 encoders (toy_image, tiny_clip)" in lines[0] and "--encoder" in lines[0]
    assert invoke("search", indexed["config"], image, "--encoder", "tiny_clip").exit_code == 0
    missing = invoke("search", indexed["config"], "no/such/file.png")
    assert missing.exit_code == 2 and "no/such/file.png: file not found" in missing.stderr


def test_no_index_yet_is_one_line_telling_to_run(tmp_path, assets):
    config = write_mini_config(tmp_path / "fresh", assets)
    result = invoke("search", config, "a red dog")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert "no search index for the current config yet; run `textme run " in lines[0]


def test_the_index_rerun_is_a_cache_hit_and_projects_nothing(indexed):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tasks.embed import read_item_sample
    from tasks.index import build_index
    from tasks.plan import replay

    with get_client(sync_client=True) as client:
        runs = {run: {tr.name: tr.state.name for tr in client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[indexed[run]])))} for run in ("cold", "warm")}
    names = {f"index-{e}" for e in ("toy_image", "toy_audio", "toy_point", "tiny_clip", "tiny_clap")}
    assert {n: runs["cold"][n] for n in names} == {n: "Completed" for n in names}
    assert {n: runs["warm"][n] for n in names} == {n: "Cached" for n in names}
    # and without Prefect's record, the stage finds every vector in the cache
    cfg = indexed["cfg"]
    rep = replay(cfg)
    st = rep.index["toy_image"]
    modal = next(s for s in rep.stages if s.unit == "toy_image/modal").manifest
    again = build_index(cfg, "toy_image", rep.heads["toy_image"]["textme"].manifest, modal)
    assert again["key"] == st.key and again["n_projected"] == 0 and again["n_items"] == st.manifest["n_items"] > 0
    indexed_keys = {k for k, _ in json.loads(Path(again["items_file"]).read_text())}
    assert set(read_item_sample(modal)[0]) <= indexed_keys  # the offset sample is in the index


def test_ann_search_agrees_with_exact_search(indexed):
    pytest.importorskip("faiss")
    from tasks.config import IndexSpec
    from tasks.search import search

    cfg = indexed["cfg"]
    # 4 of an index's sqrt(n) lists (17 to 26 here): approximate, not a full scan (measured
    # 0.91 recall@10 on the demo); the default nprobe 32 would visit every list
    ann_cfg = cfg.model_copy(update={"index": IndexSpec(ann_min_items=1, ann_nprobe=4)})
    assert ann_cfg.path == cfg.path
    overlaps = []
    for audio, image in indexed["pairs"][:10]:
        exact = search(cfg, audio, encoder="toy_audio", k=10)
        approx = search(ann_cfg, audio, encoder="toy_audio", k=10)
        assert set(exact.exact.values()) == {True} and set(approx.exact.values()) == {False}
        overlaps.append(len({h.key for h in exact.hits} & {h.key for h in approx.hits}) / 10)
    assert np.mean(overlaps) >= 0.8, overlaps
    ann_files = list((Path(cfg.workdir) / "indexes").glob("*.faiss"))
    assert len(ann_files) == 5  # one per index, persisted on first use

