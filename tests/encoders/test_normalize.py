"""`normalize=False`: the model's own outputs instead of unit rows, in another namespace."""

from __future__ import annotations

import json

import numpy as np
import pytest

from textme.encoders import get_encoder


@pytest.fixture
def vectors(tmp_path):
    path = tmp_path / "v.npy"
    vecs = (np.random.default_rng(0).standard_normal((3, 8)) * 5).astype(np.float32)
    np.save(path, vecs)
    path.with_suffix(".keys.json").write_text(json.dumps(["a", "b", "c"]))
    return path, vecs


def test_raw_outputs_are_kept_and_named_in_the_identity(vectors):
    path, vecs = vectors
    unit = get_encoder("precomputed", modal=str(path))
    raw = get_encoder("precomputed", modal=str(path), normalize=False)
    np.testing.assert_allclose(raw.encode_modal(["/x/b.png"]), vecs[[1]])
    np.testing.assert_allclose(unit.encode_modal(["/x/b.png"]), vecs[[1]] / np.linalg.norm(vecs[1]), rtol=1e-6)
    assert raw.identity("modal")["normalisation"] == "none"
    assert unit.identity("modal")["normalisation"] == "l2"  # unchanged: existing caches stay valid
    assert {k: v for k, v in raw.identity("modal").items() if k != "normalisation"} == \
           {k: v for k, v in unit.identity("modal").items() if k != "normalisation"}


def test_composite_passes_it_to_its_parts(vectors):
    path, vecs = vectors
    enc = get_encoder("composite", modal={"encoder": "precomputed", "options": {"modal": str(path)}},
                      normalize=False)
    assert enc.identity("modal")["normalisation"] == "none"
    np.testing.assert_allclose(enc.encode_modal(["/y/c.png"]), vecs[[2]])


def test_open_clip_raw_features(tiny_open_clip):
    unit = get_encoder("open-clip", **tiny_open_clip, device="cpu")
    raw = get_encoder("open-clip", **tiny_open_clip, device="cpu", normalize=False)
    u, r = unit.encode_text(["a dog on the grass"]), raw.encode_text(["a dog on the grass"])
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(r / np.linalg.norm(r, axis=1, keepdims=True), u, atol=1e-5)
    assert not np.allclose(np.linalg.norm(r, axis=1), 1)  # open_clip's own features, not unit rows
    assert raw.identity("text") != unit.identity("text")


def test_pipeline_entry_normalize_reaches_every_builder(tmp_path, vectors):
    """`encoders.X.normalize: false` is carried in the options the stages build from, so
    every key changes and a worker building from (encoder, options) gets it too."""
    from tasks import keys
    from tasks.config import ConfigError, config_from_dict
    from tasks.validate import check_encoder_options

    path, _ = vectors

    def cfg(**entry):
        return config_from_dict({
            "pivot": {"encoder": "toy-pivot"},
            "encoders": {"v": {"encoder": "precomputed", "options": {"modal": str(path), "text": str(path)},
                               "train_on": ["d"], **entry}},
            "datasets": {"d": {"source": str(tmp_path / "c.jsonl"), "items": str(tmp_path)}},
        }, config_dir=tmp_path)

    unit, raw = cfg(), cfg(normalize=False)
    assert keys.encoder_ref(raw, "v").options["normalize"] is False
    assert "normalize" not in keys.encoder_ref(unit, "v").options
    assert keys.encoder_of(raw, "v").normalize is False
    assert keys.namespace_id(keys.encoder_identity(raw, "v", "modal")) != \
           keys.namespace_id(keys.encoder_identity(unit, "v", "modal"))
    with pytest.raises(ConfigError, match=r"encoders.v.options.normalize: not an encoder option; "
                                          r"set encoders.v.normalize"):
        check_encoder_options(cfg(options={"modal": str(path), "normalize": False}))
