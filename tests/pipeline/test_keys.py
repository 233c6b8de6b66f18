"""Stage keys: what changes them, what must not, and the Prefect adapters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tasks import keys
from tasks.config import load_config
from tests.pipeline.helpers import write_mini_config


@pytest.fixture
def cfg_path(mini_config: Path) -> Path:
    return mini_config


def snapshot(cfg) -> str:
    """The resolved config as the flow stores it (what key functions load)."""
    from flows.pipeline import write_snapshot

    return write_snapshot(cfg, keys.config_fingerprint(cfg))


def captions_manifest(fp: str, dataset: str = "scenes_image") -> dict:
    return {"dataset": dataset, "captions_fp": fp}


def test_keys_are_stage_prefixed_and_stable(cfg_path):
    cfg = load_config(cfg_path)
    a = keys.ingest_key(cfg, "scenes_image")
    assert a.startswith("ingest-") and len(a) == len("ingest-") + 64
    assert keys.ingest_key(load_config(cfg_path), "scenes_image") == a
    assert keys.ingest_key(cfg, "scenes_audio") != a


def test_ingest_key_follows_content_not_mtime(cfg_path):
    cfg = load_config(cfg_path)
    source = Path(cfg.datasets["scenes_image"].source)
    before = keys.ingest_key(cfg, "scenes_image")
    os.utime(source, (1, 1))  # touched, same bytes
    assert keys.ingest_key(cfg, "scenes_image") == before
    source.write_text(source.read_text() + json.dumps({"caption_id": "x", "caption": "a new one"}) + "\n")
    assert keys.ingest_key(cfg, "scenes_image") != before


def test_embed_key_depends_on_identity_and_caption_set_not_order(cfg_path):
    cfg = load_config(cfg_path)
    m1, m2 = captions_manifest("a" * 64), captions_manifest("b" * 64, "scenes_audio")
    k = keys.embed_texts_key(cfg, "toy_image", "text", [m1, m2])
    assert keys.embed_texts_key(cfg, "toy_image", "text", [m2, m1]) == k
    assert keys.embed_texts_key(cfg, "toy_image", "text", [m1]) != k
    assert keys.embed_texts_key(cfg, "toy_audio", "text", [m1, m2]) != k  # other tower_seed
    assert keys.embed_texts_key(cfg, "pivot", "text", [m1, m2]) != k


def test_train_key_resolves_defaults_and_ignores_device(cfg_path, tmp_path):
    cfg = load_config(cfg_path)
    text, pivot = {"namespace": "t" * 64}, {"namespace": "p" * 64}
    caps = [captions_manifest("c" * 64)]
    offset = {"offset_fp": "o" * 64}
    base = keys.train_key(cfg, "toy_image", text, pivot, caps, offset)

    def variant(extra: str) -> str:
        text_cfg = cfg_path.read_text().replace("batch_size: 64", f"batch_size: 64\n  {extra}")
        path = tmp_path / f"v{abs(hash(extra))}.yaml"
        path.write_text(text_cfg)
        return keys.train_key(load_config(path), "toy_image", text, pivot, caps, offset)

    assert variant("lr: 0.0005") == base  # the default, spelled out
    assert variant("device: cpu") == base  # where, not what
    assert variant("lr: 0.001") != base
    assert keys.train_key(cfg, "toy_image", text, pivot, caps, None) != base  # uncentred


@pytest.mark.parametrize("training", [{}, {"lr": 1, "betas": [0.8, 0.99], "max_neg": 4, "schedule": "constant",
                                      "dim_act": "relu", "grad_clip": None, "device": "cpu"}])
def test_train_params_are_train_configs_resolution_without_torch(cfg_path, tmp_path, training):
    """Keys read TrainConfig's defaults from the config model (no torch): the same values
    TrainConfig itself resolves, device left out."""
    from textme.training import TrainConfig

    data = yaml.safe_load(cfg_path.read_text())
    data["training"] = {k: v for k, v in data["training"].items() if k == "ablate_centring"} | training
    path = tmp_path / "training.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    expected = TrainConfig(**cfg.training.params).to_dict()
    expected.pop("device")
    assert keys.train_params(cfg) == expected
    assert json.dumps(keys.train_params(cfg), sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_evaluate_key_follows_manifest_and_item_bytes(cfg_path, tmp_path):
    cfg = load_config(cfg_path)
    heads = {"toy_image": {"offset": {"offset_fp": "o" * 64}, "textme": {"projection_fp": "h" * 64},
                           "uncentred": None}}
    pivot = {"namespace": "p" * 64}
    manifest = Path(cfg.evaluation_by_name("image_retrieval").manifest)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    item = tmp_path / "item.png"
    item.write_bytes(Path(rows[0]["item"]).read_bytes())
    rows[0]["item"] = str(item)
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    k = keys.evaluate_key(cfg, "image_retrieval", heads, pivot)

    with item.open("ab") as fh:  # same manifest, one item's bytes changed
        fh.write(b"\0")
    k_item = keys.evaluate_key(cfg, "image_retrieval", heads, pivot)
    assert k_item != k

    rows[0]["captions"] = rows[0]["captions"][:1]  # same items, manifest changed
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert keys.evaluate_key(cfg, "image_retrieval", heads, pivot) not in (k, k_item)

    other_head = {"toy_image": {**heads["toy_image"], "textme": {"projection_fp": "g" * 64}}}
    assert keys.evaluate_key(cfg, "image_retrieval", other_head, pivot) != keys.evaluate_key(
        cfg, "image_retrieval", heads, pivot)


def test_prefect_key_functions_ignore_the_run(cfg_path):
    """The context (which carries the run) is not read; only parameters are."""
    cfg = load_config(cfg_path)
    snap = snapshot(cfg)
    params = {"config": snap, "dataset": "scenes_image"}
    assert keys.ingest_key_fn(object(), params) == keys.ingest_key_fn(None, params) == keys.ingest_key(cfg, "scenes_image")
    assert keys.embed_items_key_fn(None, {"config": snap, "encoder": "toy_image"}) == keys.embed_items_key(cfg, "toy_image")


def test_prefect_key_functions_raise_instead_of_returning_none(cfg_path, tmp_path):
    with pytest.raises(FileNotFoundError):
        keys.ingest_key_fn(None, {"config": str(tmp_path / "missing.json"), "dataset": "x"})
    snap = snapshot(load_config(cfg_path))
    with pytest.raises(KeyError):
        keys.ingest_key_fn(None, {"config": snap, "dataset": "nope"})


def test_config_fingerprint_ignores_origin_only(cfg_path, tmp_path, assets):
    a = load_config(cfg_path)
    other = write_mini_config(tmp_path / "elsewhere", assets)
    b = load_config(other)
    assert a.workdir != b.workdir and keys.config_fingerprint(a) != keys.config_fingerprint(b)  # paths differ
    c = load_config(cfg_path)
    assert keys.config_fingerprint(a) == keys.config_fingerprint(c)


def test_stand_in_detection(cfg_path, assets):
    cfg = load_config(cfg_path)
    assert keys.is_stand_in(cfg, "toy_image") and keys.is_stand_in(cfg, "pivot")
