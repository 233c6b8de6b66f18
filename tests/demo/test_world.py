"""The toy world: deterministic, held-out scenes really held out, sensible text latents."""

from __future__ import annotations

import numpy as np
import pytest

from demo.world import ATTRIBUTES, MODALITIES, TEMPLATES, Scene, World


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = World(seed=0), World(seed=0), World(seed=1)
    assert a.train_captions("image", 50) == b.train_captions("image", 50)
    assert a.eval_scenes == b.eval_scenes
    np.testing.assert_array_equal(a.text_latent("a red dog"), b.text_latent("a red dog"))
    assert a.train_captions("image", 50) != c.train_captions("image", 50)
    assert not np.allclose(a.text_latent("a red dog"), c.text_latent("a red dog"))


def test_eval_scenes_are_unique_in_every_modality(world: World):
    assert len(world.eval_scenes) == world.n_eval
    for m in MODALITIES:
        views = [s.visible(m) for s in world.eval_scenes]
        assert len(set(views)) == len(views), m


@pytest.mark.parametrize("modality", MODALITIES)
def test_training_never_shows_a_held_out_view(world: World, modality: str):
    held_out = {s.visible(modality) for s in world.eval_scenes}
    captions = world.train_captions(modality, 1500)
    assert not held_out & {s.visible(modality) for s, _ in captions}
    assert not held_out & {s.visible(modality) for s in world.train_scenes(modality, 600, "items")}
    texts = [" ".join(c.lower().split()) for _, c in captions]
    assert len(set(texts)) == len(texts)


def test_captions_use_every_template_and_vary(world: World):
    for m in MODALITIES:
        captions = [c for _, c in world.train_captions(m, 1500)]
        # each template's fixed words show up: every template is used
        for t in TEMPLATES[m]:
            fixed = [w for w in t.replace(",", " ").split() if "{" not in w and len(w) > 3]
            if fixed:
                assert any(all(w in c for w in fixed) for c in captions), (m, t)


def test_caption_names_the_scene_it_describes(world: World):
    rng = np.random.default_rng(0)
    scene = Scene("dog", "red", "park", "loud", "small")
    for _ in range(20):
        words = set(world.caption(scene, "image", rng).replace(",", " ").split())
        named = {world.vocabulary[w] for w in words if w in world.vocabulary}
        assert named <= {("object", "dog"), ("colour", "red"), ("place", "park")}
        assert ("object", "dog") in named


def test_text_latent_maps_synonyms_together_and_edits_apart(world: World):
    base = world.text_latent("a red dog in the park")
    synonym = world.text_latent("a crimson puppy in the playground")
    edited = world.text_latent("a blue dog in the park")
    unrelated = world.text_latent("a green kettle in the kitchen")
    assert cos(base, synonym) > 0.7
    assert cos(base, synonym) > cos(base, edited) > cos(base, unrelated)
    assert not np.allclose(base, edited)


def test_unknown_words_nudge_but_do_not_move_the_meaning(world: World):
    base = world.text_latent("a red dog")
    nudged = world.text_latent("a red dog zorblax")
    assert not np.allclose(base, nudged)
    assert cos(base, nudged) > 0.95
    assert np.allclose(world.text_latent("A RED   dog!"), base)  # case and punctuation


def test_scene_latent_sees_only_its_modalitys_attributes(world: World):
    a = Scene("dog", "red", "park", "loud", "small")
    b = Scene("dog", "blue", "park", "loud", "small")
    np.testing.assert_allclose(world.scene_latent(a, "audio"), world.scene_latent(b, "audio"))
    assert not np.allclose(world.scene_latent(a, "image"), world.scene_latent(b, "image"))
    assert np.linalg.norm(world.scene_latent(a, "point")) == pytest.approx(1.0)


def test_scene_from_dict_names_the_bad_field():
    good = {"object": "dog", "colour": "red", "place": "park", "manner": "loud", "size": "small"}
    assert Scene.from_dict(good).to_dict() == good
    with pytest.raises(ValueError, match="'colour'.*'mauve'"):
        Scene.from_dict({**good, "colour": "mauve"})
    with pytest.raises(ValueError, match="needs fields"):
        Scene.from_dict({"object": "dog"})
    with pytest.raises(ValueError, match="unknown modality 'smell'"):
        Scene.from_dict(good).visible("smell")


def test_vocabulary_words_name_one_value_each():
    words = [w for values in ATTRIBUTES.values() for ws in values.values() for w in ws]
    assert len(words) == len(set(words))
