"""open_clip adapters: a tiny custom-config CLIP loaded through the real open_clip code,
and the paper's presets checked without weights (identity and dimension need none)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from textme.encoders import EncoderInputError, ModelUnavailableError, get_encoder

TEXTS = ["a dog on the grass", "a photo of a cat", "two people walking along a river at night", "a car"]


@pytest.fixture
def clip(tiny_open_clip):
    return get_encoder("open-clip", **tiny_open_clip, device="cpu")


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 30), (32, 32), (64, 48)]):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_identity_names_config_weights_and_preprocessing(clip, tiny_open_clip):
    text_id, modal_id = clip.identity("text"), clip.identity("modal")
    assert clip._model is None
    json.dumps([text_id, modal_id])
    assert text_id["model"] == "textme-tiny-clip" and len(text_id["weights_sha256"]) == 64
    assert text_id["max_length"] == 77 and text_id["tokenizer"] == "open_clip.SimpleTokenizer"
    pre = modal_id["preprocessing"]
    assert pre["size"] == [32, 32] and pre["interpolation"] == "bicubic" and len(pre["mean"]) == 3
    assert "preprocessing" not in text_id and "max_length" not in modal_id
    assert clip.dim == 32 and clip.modality == "image"


def test_text_and_image_outputs(clip, images):
    t = clip.encode_text(TEXTS)
    m = clip.encode_modal(images)
    assert t.shape == (4, 32) and m.shape == (3, 32) and t.dtype == m.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(np.vstack([t, m]), axis=1), 1.0, atol=1e-6)
    got = clip._model.visual.preprocess_cfg  # open_clip agreed with the identity's preprocessing
    assert list(got["size"]) == [32, 32]


def test_deterministic_and_batch_order_independent(clip, tiny_open_clip, images):
    alone = np.concatenate([clip.encode_text([t]) for t in TEXTS])
    mixed = clip.encode_text(TEXTS[::-1], batch_size=3)[::-1]
    np.testing.assert_allclose(mixed, alone, atol=1e-5)
    other = get_encoder("open-clip", **tiny_open_clip, device="cpu")
    np.testing.assert_array_equal(other.encode_text(TEXTS), clip.encode_text(TEXTS))
    img_alone = np.concatenate([clip.encode_modal([p]) for p in images])
    np.testing.assert_allclose(clip.encode_modal(images[::-1], batch_size=2)[::-1], img_alone, atol=1e-5)


def test_model_config_option_is_the_same_model(tiny_open_clip):
    a = get_encoder("open-clip", model_config=tiny_open_clip["model"],
                    pretrained=tiny_open_clip["pretrained"], device="cpu")
    b = get_encoder("open-clip", **tiny_open_clip, device="cpu")
    assert a.identity("text") == b.identity("text")


def test_unreadable_and_missing_images_are_named(clip, images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    with pytest.raises(EncoderInputError, match=r"image .*broken\.png: cannot be read as an image"):
        clip.encode_modal([images[0], str(broken)])
    with pytest.raises(EncoderInputError, match=r"image .*nowhere\.png: file not found"):
        clip.encode_modal([str(tmp_path / "nowhere.png")])


def test_bad_model_and_weights_options(tiny_open_clip):
    with pytest.raises(ValueError, match="open_clip has no model 'ViT-B-33'; did you mean .*ViT-B-32"):
        get_encoder("open-clip", model="ViT-B-33", pretrained="openai")
    with pytest.raises(ValueError, match="needs `pretrained`: a tag .*laion2b_s32b_b79k"):
        get_encoder("open-clip", model="ViT-H-14")
    with pytest.raises(ValueError, match="'no-such-tag' for 'ViT-H-14' is neither a file nor a known tag"):
        get_encoder("open-clip", model="ViT-H-14", pretrained="no-such-tag")
    with pytest.raises(ValueError, match="disagree"):
        get_encoder("open-clip", model="ViT-B-32", model_config=tiny_open_clip["model"],
                    pretrained=tiny_open_clip["pretrained"])


def test_paper_presets_without_weights():
    clip = get_encoder("clip")
    assert clip.dim == 1024 and clip.modality == "image"  # from open_clip's config, no weights
    ident = clip.identity("modal")
    assert ident["model"] == "ViT-H-14" and ident["pretrained"] == "laion2b_s32b_b79k"
    assert ident["quick_gelu"] is False and ident["preprocessing"]["size"] == [224, 224]
    openai = get_encoder("open-clip", model="ViT-L-14", pretrained="openai")
    assert openai.dim == 768 and openai.identity("text")["quick_gelu"] is True  # as the tag was trained

    remote = get_encoder("remoteclip")
    rid = remote.identity("modal")
    assert remote.dim == 768 and remote.modality == "satellite"
    assert rid["hub_file"] == "chendelong/RemoteCLIP/RemoteCLIP-ViT-L-14.pt"
    assert rid["revision"] == "main"  # offline, nothing cached: the revision as written

    uni3d = get_encoder("uni3d-text")
    assert uni3d.towers == ("text",) and uni3d.dim == 1024 and uni3d.modality == "point"
    with pytest.raises(ValueError, match="has no tower 'modal'"):
        uni3d.encode_modal(["cloud.npy"])


def test_remoteclip_local_checkpoint(tiny_open_clip):
    enc = get_encoder("remoteclip", model=tiny_open_clip["model"], checkpoint=tiny_open_clip["pretrained"],
                      device="cpu")
    assert enc.encode_text(TEXTS).shape == (4, 32)
    assert "weights_sha256" in enc.identity("text")


def test_offline_tag_is_one_clear_line():
    enc = get_encoder("clip", device="cpu")
    with pytest.raises(ModelUnavailableError) as info:
        enc.encode_text(["a dog"])
    msg = str(info.value)
    assert "\n" not in msg and "ViT-H-14/laion2b_s32b_b79k" in msg and "could not be fetched" in msg
    assert "`pretrained: /local/" in msg and "HF_HUB_OFFLINE" in msg


def test_offline_hub_checkpoint_is_one_clear_line():
    with pytest.raises(ModelUnavailableError) as info:
        get_encoder("remoteclip", device="cpu").encode_text(["a harbour"])
    msg = str(info.value)
    assert "\n" not in msg and "'RemoteCLIP-ViT-L-14.pt' of 'chendelong/RemoteCLIP'" in msg
    assert "could not be fetched" in msg and "`checkpoint: /local/RemoteCLIP-ViT-L-14.pt`" in msg


def test_text_only_tower_drops_the_image_tower(tiny_open_clip):
    enc = get_encoder("open-clip", **tiny_open_clip, towers=("text",), device="cpu")
    enc.encode_text(["a dog"])
    assert isinstance(enc._model.visual, torch.nn.Identity)


def test_text_and_modal_encodes_racing_on_first_load(tiny_open_clip, images, monkeypatch):
    # The pipeline's text and modal embed tasks share one encoder and run in parallel
    # threads; a slow load must not let one of them see a half-loaded model.
    import threading
    import time

    import open_clip

    real_get_tokenizer = open_clip.get_tokenizer
    loads = []

    def slow_get_tokenizer(*args, **kwargs):
        loads.append(threading.get_ident())
        time.sleep(0.3)
        return real_get_tokenizer(*args, **kwargs)

    monkeypatch.setattr(open_clip, "get_tokenizer", slow_get_tokenizer)
    enc = get_encoder("open-clip", **tiny_open_clip, device="cpu")
    results, errors = {}, []

    def run(tower, inputs):
        try:
            results[tower] = enc.encode(tower, inputs)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=("text", TEXTS)), threading.Thread(target=run, args=("modal", images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(loads) == 1  # loaded once
    assert results["text"].shape == (4, 32) and results["modal"].shape == (3, 32)


# --------------------------------------------------------------------------- whole model repositories

REPO_COMMIT = "c" * 40


def open_clip_repo(folder, tiny_open_clip) -> None:
    """The files of an open_clip model repository on the hub, for the tiny model."""
    import shutil
    from pathlib import Path

    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = json.loads(Path(tiny_open_clip["model"]).read_text())
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}))
    shutil.copy(tiny_open_clip["pretrained"], folder / "open_clip_model.safetensors")


@pytest.fixture
def hub_repo(tiny_open_clip):
    """`textme/tiny-clip` as huggingface_hub caches a repo it downloaded (refs/main -> commit)."""
    from pathlib import Path

    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE) / "models--textme--tiny-clip"
    open_clip_repo(root / "snapshots" / REPO_COMMIT, tiny_open_clip)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REPO_COMMIT)
    return "hf-hub:textme/tiny-clip"


def test_hf_hub_model_loads_from_the_local_hub_cache_offline(hub_repo, clip, images):
    enc = get_encoder("open-clip", model=hub_repo, device="cpu")
    ident = enc.identity("modal")
    assert enc._model is None  # identity needs the config only
    assert ident["model"] == hub_repo and ident["revision"] == REPO_COMMIT and ident["hf_hub"] == "textme/tiny-clip"
    assert ident["preprocessing"]["mean"] == [0.5, 0.5, 0.5]  # the repo's own preprocessing
    np.testing.assert_allclose(enc.encode_text(TEXTS), clip.encode_text(TEXTS), atol=1e-5)  # same weights
    assert enc.encode_modal(images).shape == (3, 32)


def test_local_dir_model_is_named_by_content(tmp_path, tiny_open_clip, clip):
    a, b = tmp_path / "a", tmp_path / "b"
    open_clip_repo(a, tiny_open_clip)
    open_clip_repo(b, tiny_open_clip)
    enc_a = get_encoder("open-clip", model=f"local-dir:{a}", device="cpu")
    enc_b = get_encoder("open-clip", model=f"local-dir:{b}", device="cpu")
    assert enc_a.identity("text") == enc_b.identity("text")  # a copy elsewhere shares the cache
    assert enc_a.identity("text")["model"] == "local-dir"
    np.testing.assert_allclose(enc_a.encode_text(TEXTS), clip.encode_text(TEXTS), atol=1e-5)
    with pytest.raises(ModelUnavailableError, match="has no open_clip_config.json"):
        get_encoder("open-clip", model=f"local-dir:{tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="drop `pretrained`"):
        get_encoder("open-clip", model=f"local-dir:{a}", pretrained="openai")


def test_offline_hf_hub_model_is_one_clear_line():
    """Not a raw FileNotFoundError from open_clip: the one-line offline message."""
    with pytest.raises(ModelUnavailableError) as info:
        get_encoder("open-clip", model="hf-hub:timm/ViT-B-16-SigLIP", device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and "'hf-hub:timm/ViT-B-16-SigLIP'" in msg and "could not be fetched" in msg
    assert "HF_HUB_OFFLINE" in msg and "`model: local-dir:DIR`" in msg


def test_offline_hf_hub_model_without_cached_weights(hub_repo):
    from pathlib import Path

    from huggingface_hub import constants

    weights = Path(constants.HF_HUB_CACHE) / "models--textme--tiny-clip" / "snapshots" / REPO_COMMIT
    (weights / "open_clip_model.safetensors").unlink()
    enc = get_encoder("open-clip", model=hub_repo, device="cpu")  # the config is there
    with pytest.raises(ModelUnavailableError, match=r"'hf-hub:textme/tiny-clip' \(weights\) could not be fetched"):
        enc.encode_text(["a dog"])


@pytest.mark.parametrize("model_pre, tag_pre", [
    ({}, {}),
    ({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, {}),
    ({"interpolation": "bilinear"}, {"resize_mode": "squash", "fill_color": None, "quick_gelu": True}),
    ({"size": 64, "unknown": 1}, {"mean": (0.1, 0.2, 0.3), "interpolation": None}),
])
def test_identity_preprocessing_is_open_clips_own_resolution(clip, model_pre, tag_pre):
    """The identity restates open_clip's preprocessing defaults and merge (no open_clip
    import for a custom config); open_clip's own functions must give the same."""
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    clip.config = {**clip.config, "preprocess_cfg": model_pre}
    clip.tag_cfg = tag_pre
    theirs = merge_preprocess_dict(merge_preprocess_dict(asdict(PreprocessCfg()), model_pre), tag_pre)
    size = clip.config["vision_cfg"].get("image_size", theirs["size"])
    theirs["size"] = list(size) if isinstance(size, (list, tuple)) else [size, size]
    assert clip.preprocess_cfg() == {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(theirs.items())}


def test_identity_of_a_custom_config_and_local_weights_imports_no_model_library(tiny_open_clip):
    """What `textme run` does on every re-run: the identity from the config file and the
    weights file's hash, in a fresh interpreter that must not import open_clip or torch."""
    import subprocess
    import sys

    code = ("import json, sys\n"
            "from textme.encoders import get_encoder\n"
            f"enc = get_encoder('open-clip', **{tiny_open_clip!r})\n"
            "ids = [enc.identity(t) for t in enc.towers]\n"
            "print(json.dumps([sorted(m for m in ('torch', 'open_clip', 'torchvision', 'transformers') "
            "if m in sys.modules), ids]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    heavy, ids = json.loads(done.stdout)
    assert heavy == []
    here = get_encoder("open-clip", **tiny_open_clip)
    assert ids == [here.identity(t) for t in here.towers]
