"""The shipped configs/demo.yaml end to end (its workdir moved to a temporary folder).

The demo's toy world is built so that the method's claims are visible; this test holds
the pipeline to them: text-only heads transfer to the modal side far above chance,
better centred than uncentred, and retrieval between two encoders' modalities emerges.
"""

from __future__ import annotations


import pytest

from tests.pipeline.helpers import rows


@pytest.fixture(scope="module")
def demo_run(demo_pipeline):
    from tasks.config import load_config

    got = rows(load_config(demo_pipeline["config"]), "results", demo_pipeline["run_id"])
    return {(r["eval_name"], r["variant"], r["metric"]): r for r in got}


def value(results: dict, name: str, variant: str, metric: str) -> float:
    return results[(name, variant, metric)]["value"]


@pytest.mark.slow
def test_demo_shows_text_only_transfer_above_chance_and_what_centring_buys(demo_run):
    for name, metric in (("image_retrieval", "R@1"), ("audio_retrieval", "R@1"),
                         ("point_classification", "top1")):
        textme = value(demo_run, name, "textme", metric)
        assert textme > 5 * value(demo_run, name, "chance", metric), name
        assert textme > value(demo_run, name, "uncentred", metric), name


@pytest.mark.slow
def test_demo_shows_emergent_cross_modal_retrieval(demo_run):
    for name in ("audio_to_image", "image_to_point"):
        assert value(demo_run, name, "textme", "R@5") > 5 * value(demo_run, name, "chance", "R@5"), name
        assert value(demo_run, name, "textme", "R@5") > value(demo_run, name, "uncentred", "R@5"), name


@pytest.mark.slow
def test_demo_mixed_search_and_stand_in_flags(demo_run):
    assert value(demo_run, "mixed_search", "textme", "NDCG@10") > value(demo_run, "mixed_search", "native", "NDCG@10")
    assert all(r["stand_in"] for r in demo_run.values())
    # the tiny real-class models ran through the real adapters too
    assert ("image_retrieval_tiny_clip", "native", "R@1") in demo_run
