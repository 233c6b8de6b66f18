"""The toy encoders: plugins through the entry point, stable identities, a modality gap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from demo.encoders import ToyEncoder, ToyPivot
from textme.encoders.errors import EncoderInputError
from textme.encoders.registry import get_encoder, list_encoders

CAPTIONS = ["a red dog in the park", "a blue cat at the beach", "a green car on the street"]
TOY = dict(modality="image", tower_seed=1, dim=64, gap_norm=2.5, noise=0.4, world_seed=0)


def items(demo_assets: dict, modality: str, n: int) -> list[str]:
    return sorted(str(p) for p in Path(demo_assets["items"][modality]).iterdir())[:n]


def test_registered_through_the_entry_point():
    assert {"toy", "toy-pivot"} <= set(list_encoders())
    enc = get_encoder("toy", **TOY)
    assert isinstance(enc, ToyEncoder) and enc.name == "toy" and enc.modality == "image"
    assert enc.towers == ("text", "modal") and enc.dim == 64
    pivot = get_encoder("toy-pivot", dim=32)
    assert isinstance(pivot, ToyPivot) and pivot.towers == ("text", "query") and pivot.dim == 32


def test_unknown_or_bad_options_are_named():
    with pytest.raises(TypeError, match="unknown option.*colour"):
        get_encoder("toy", colour="red")
    with pytest.raises(ValueError, match="'modality'.*'smell'"):
        ToyEncoder(modality="smell")
    with pytest.raises(ValueError, match="'gap_norm'"):
        ToyEncoder(gap_norm=-1)
    with pytest.raises(ValueError, match="'dim'"):
        ToyPivot(dim=True)


def test_identity_is_stable_json_and_marks_a_stand_in():
    a, b = ToyEncoder(**TOY), ToyEncoder(**TOY)
    for tower in a.towers:
        assert a.identity(tower) == b.identity(tower)
        ident = json.loads(json.dumps(a.identity(tower)))
        assert ident["tower"] == tower and ident["stand_in"] is True
        assert ident["adapter"] == "toy" and ident["embed_code_version"]
    assert ToyPivot().identity("query")["stand_in"] is True
    with pytest.raises(ValueError, match="no tower 'query'"):
        a.identity("query")


@pytest.mark.parametrize("option, value", [("tower_seed", 2), ("dim", 48), ("gap_norm", 1.0),
                                           ("noise", 0.1), ("world_seed", 1)])
def test_identity_changes_with_every_output_changing_option(option, value):
    base, other = ToyEncoder(**TOY), ToyEncoder(**{**TOY, option: value})
    for tower in base.towers:
        assert base.identity(tower) != other.identity(tower)


def test_identity_ignores_what_does_not_change_outputs():
    base = ToyEncoder(**TOY)
    assert ToyEncoder(**TOY, device="cpu", batch_size=3).identity("modal") == base.identity("modal")
    audio = ToyEncoder(**{**TOY, "modality": "audio"})
    # the text tower never sees the modality, so it shares vectors (and a namespace)
    assert audio.identity("text") == base.identity("text")
    np.testing.assert_array_equal(audio.encode_text(CAPTIONS), base.encode_text(CAPTIONS))
    assert audio.identity("modal") != base.identity("modal")
    pivot = ToyPivot(dim=16)
    assert pivot.identity("text") != pivot.identity("query")
    for option, value in (("dim", 32), ("noise", 0.2), ("world_seed", 3)):
        assert ToyPivot(**{"dim": 16, option: value}).identity("text") != pivot.identity("text")


def test_same_input_same_vector_whatever_the_batch():
    a, b = ToyEncoder(**TOY), ToyEncoder(**TOY)
    full = a.encode_text(CAPTIONS)
    assert full.dtype == np.float32 and full.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(b.encode_text(CAPTIONS[2:] + CAPTIONS[:1])[0], full[2])
    assert not np.allclose(full[0], full[1])
    pivot = ToyPivot()
    np.testing.assert_array_equal(pivot.encode("query", CAPTIONS), ToyPivot().encode("query", CAPTIONS))


def test_modal_vectors_follow_the_file_bytes(demo_assets, tmp_path):
    enc = ToyEncoder(**TOY)
    paths = items(demo_assets, "image", 3)
    copy = tmp_path / "renamed.png"
    shutil.copyfile(paths[1], copy)
    vecs = enc.encode_modal(paths + [str(copy)])
    np.testing.assert_array_equal(vecs[3], vecs[1])  # same bytes, same vector
    assert not np.allclose(vecs[0], vecs[1])


def test_an_edited_caption_moves_a_little():
    pivot = ToyPivot()
    v = pivot.encode_text(["a red dog in the park", "a red puppy in the garden",
                           "a red dog in the kitchen", "a white kettle in a kitchen"])
    synonyms, edited, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2]), float(v[0] @ v[3])
    assert synonyms > edited + 0.2 and edited > unrelated + 0.1
    q = pivot.encode("query", ["a red dog in the park"])[0]
    assert 0.9 < float(q @ v[0]) < 1.0  # query tower: same meaning, its own noise


def test_wrong_modality_or_foreign_file_is_an_input_error(demo_assets, tmp_path):
    audio_item = items(demo_assets, "audio", 1)[0]
    with pytest.raises(EncoderInputError, match=r"audio-0000\.wav: an item of modality 'audio', "
                                                r"but this toy encoder reads image items"):
        ToyEncoder(**TOY).encode_modal([audio_item])
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(EncoderInputError, match=r"x\.txt"):
        ToyEncoder(**TOY).encode_modal([str(tmp_path / "x.txt")])
    with pytest.raises(EncoderInputError, match=r"nope\.png: cannot read item"):
        ToyEncoder(**TOY).encode_modal([str(tmp_path / "nope.png")])


def test_towers_have_a_modality_gap_that_is_nearly_constant(demo_assets, world):
    """What TextME relies on: the centroids differ (cosine well below 1) and each
    caption-item pair is displaced by nearly the same vector."""
    enc = ToyEncoder(**TOY)
    scenes = world.train_scenes("image", 600, stream="items")
    paths = items(demo_assets, "image", 600)
    rng = np.random.default_rng(0)
    captions = [world.caption(s, "image", rng) for s in scenes]
    t, m = enc.encode_text(captions), enc.encode_modal(paths)
    mu_t, mu_m = t.mean(0), m.mean(0)
    centroid_cos = float(mu_t @ mu_m / np.linalg.norm(mu_t) / np.linalg.norm(mu_m))
    assert 0.0 < centroid_cos < 0.6
    gap = mu_t - mu_m
    pair_gaps = t - m
    alignment = pair_gaps @ gap / np.linalg.norm(pair_gaps, axis=1) / np.linalg.norm(gap)
    assert float(np.median(alignment)) > 0.8
    # and it is big: larger than the spread of either tower around its centroid
    assert np.linalg.norm(gap) > np.linalg.norm(m - mu_m, axis=1).mean()
