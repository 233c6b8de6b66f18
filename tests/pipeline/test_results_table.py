"""The end-of-run results table keeps every number at 80 columns, and the Prefect results
artifact is a table laid out like it."""

from __future__ import annotations

import io
import json

from rich.console import Console

from flows.cli import _results_table
from tasks.results import artifact_key, results_grid, results_table_rows
from tests.pipeline.helpers import rows


def render(rows_: list[dict], width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(_results_table(rows_, "TextME results: a config with a long name"))
    return console.export_text()


def numbers(rows_: list[dict]) -> list[str]:
    return [f"{r['value']:.2f}" for r in rows_]


def long_label_rows() -> list[dict]:
    """Every task and variant, with the longest labels the paper's configs have."""
    out = []
    for name, task, source, target, metrics in [
        ("flickr30k_image_retrieval_test", "retrieval", "pivot", "clip_vit_h14_laion2b",
         ["R@1", "R@5", "R@10", "median_rank", "mean_rank", "PPR(R@1)"]),
        ("modelnet40_zero_shot_classification", "classification", "pivot", "uni3d", ["top1", "top5", "PPR(top1)"]),
        ("audiocaps_to_modelnet40", "emergent", "clap_larger_music_and_speech", "uni3d", ["R@1", "R@10"]),
        ("mixbench_mscoco_mixed_search", "mixed_search", "pivot", "clip", ["NDCG@10", "share_modal@10"]),
    ]:
        for i, metric in enumerate(metrics):
            for j, variant in enumerate(("textme", "uncentred", "native", "chance")):
                out.append({"eval_name": name, "task": task, "source_encoder": source, "target_encoder": target,
                            "metric": metric, "variant": variant, "value": 100.0 - 7.31 * i - 1.17 * j,
                            "stand_in": True})
    return out


def test_every_number_is_shown_at_80_columns(pipeline_runs):
    cfg = pipeline_runs["cfg"]
    for rows_ in (rows(cfg, "results", pipeline_runs["cold"]), long_label_rows()):
        text = render(rows_, 80)
        assert max(len(line) for line in text.splitlines()) <= 80
        cells = text.split()
        for value in numbers(rows_):
            assert value in cells, value  # whole, not cut or wrapped
        assert "stand-in" in text


def test_one_line_per_metric_one_column_per_variant():
    variants, lines = results_grid(long_label_rows())
    assert variants == ["textme", "uncentred", "native", "chance"]
    assert len(lines) == 13 and all(set(variants) <= set(line) for line in lines)
    first = [line["metric"] for line in lines if line["task"] == "retrieval"]
    assert first == ["R@1", "R@5", "R@10", "median_rank", "mean_rank", "PPR(R@1)"]
    shuffled = results_grid(long_label_rows()[::-1])
    assert shuffled == (variants, lines)  # never depends on the order rows were read in
    emergent = [line for line in lines if line["task"] == "emergent"]
    assert {line["encoder"] for line in emergent} == {"clap_larger_music_and_speech→uni3d"}


def test_results_artifact_is_a_table_like_the_cli_table(pipeline_runs, prefect_api):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    cfg, run_id = pipeline_runs["cfg"], pipeline_runs["edit"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    by_key = {a.key: a for a in artifacts}
    table = by_key[artifact_key("results", cfg.name)]
    assert table.type == "table" and "stand-in models" in table.description
    data = table.data if isinstance(table.data, list) else json.loads(table.data)
    expected = results_table_rows(rows(cfg, "results", run_id), [e.name for e in cfg.evaluation])
    assert data == expected
    assert [line["evaluation"] for line in data[:1]] == [cfg.evaluation[0].name]  # the config's order
    assert list(data[0]) == ["evaluation", "task", "encoder", "metric", "textme", "uncentred", "native", "chance",
                             "stand_in"]
    assert by_key[artifact_key("training", cfg.name)].type == "markdown"  # the training curves stay
