"""The composite encoder: a native text tower with a precomputed modal tower (Uni3D's case)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from textme.encoders import get_encoder


@pytest.fixture
def point_vectors(tmp_path):
    path = tmp_path / "points.npy"
    vecs = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    np.save(path, vecs)
    path.with_suffix(".keys.json").write_text(json.dumps(["a", "b", "c"]))
    return path, vecs


def test_text_native_modal_precomputed(tiny_open_clip, point_vectors):
    path, vecs = point_vectors
    enc = get_encoder("composite",
                      text={"encoder": "open-clip", "options": {**tiny_open_clip, "towers": ["text"]}},
                      modal={"encoder": "precomputed", "options": {"modal": str(path), "modality": "point"}},
                      device="cpu")
    assert enc.towers == ("text", "modal") and enc.modality == "point" and enc.dim == 32
    direct = get_encoder("open-clip", **tiny_open_clip, device="cpu")
    assert enc.identity("text") == direct.identity("text")  # shares the cache with direct use
    np.testing.assert_allclose(enc.encode_text(["a dog"]), direct.encode_text(["a dog"]), atol=1e-6)
    got = enc.encode_modal(["/x/c.ply", "/y/a.ply"])
    np.testing.assert_allclose(got, vecs[[2, 0]] / np.linalg.norm(vecs[[2, 0]], axis=1, keepdims=True),
                               atol=1e-6)


def test_parts_must_agree_on_dimension(tiny_open_clip, tmp_path):
    np.save(tmp_path / "p.npy", np.ones((1, 8), np.float32))
    (tmp_path / "p.keys.txt").write_text("a\n")
    enc = get_encoder("composite", text={"encoder": "open-clip", "options": tiny_open_clip},
                      modal={"encoder": "precomputed", "options": {"modal": str(tmp_path / "p.npy")}})
    with pytest.raises(ValueError, match=r"parts disagree on dimension: text \(open-clip\) 32, modal \(precomputed\) 8"):
        enc.encode_text(["a dog"])


def test_bad_part_spec():
    with pytest.raises(ValueError, match="composite part 'text': expected a mapping"):
        get_encoder("composite", text={"name": "open-clip"})
    with pytest.raises(ValueError, match="needs at least one"):
        get_encoder("composite")
