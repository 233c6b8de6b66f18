"""Tiny model builders: deterministic, idempotent, and loadable through the real adapters."""

from __future__ import annotations

import json

import numpy as np

from textme.encoders import get_encoder
from textme.encoders.hub import sha256_tree
from textme.encoders.tiny import MARKER, build_tiny_clap, build_tiny_open_clip, build_tiny_qwen3, tiny_corpus


def test_corpus_is_a_few_hundred_deterministic_sentences():
    assert tiny_corpus(0) == tiny_corpus(0) and tiny_corpus(0) != tiny_corpus(1)
    assert 200 <= len(tiny_corpus(0)) <= 1000


def test_idempotent_and_deterministic(tiny_qwen3, tmp_path):
    marker = tiny_qwen3 / MARKER
    info = json.loads(marker.read_text())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(info["files"])
    before = {f: (tiny_qwen3 / f).stat().st_mtime_ns for f in info["files"]}
    assert build_tiny_qwen3(tiny_qwen3) == tiny_qwen3
    assert {f: (tiny_qwen3 / f).stat().st_mtime_ns for f in info["files"]} == before  # untouched
    again = build_tiny_qwen3(tmp_path / "again")
    assert sha256_tree(again) == sha256_tree(tiny_qwen3)  # same seed, same bytes
    other = build_tiny_qwen3(tmp_path / "other", seed=1)
    assert sha256_tree(other) != sha256_tree(tiny_qwen3)


def test_incomplete_folder_is_completed(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "leftover.txt").write_text("from a killed run")
    opts = build_tiny_open_clip(folder)
    assert (folder / MARKER).is_file()
    assert not list(tmp_path.glob(".clip.partial-*"))  # the temporary build folder is gone
    vecs = get_encoder("open-clip", **opts, device="cpu").encode_text(["a dog"])
    assert vecs.shape == (1, 32) and np.isfinite(vecs).all()


def test_clip_and_clap_builds_are_byte_identical(tiny_open_clip, tiny_clap, tmp_path):
    clip_again = build_tiny_open_clip(tmp_path / "clip")
    assert sha256_tree(clip_again["pretrained"]) == sha256_tree(tiny_open_clip["pretrained"])
    assert sha256_tree(clip_again["model"]) == sha256_tree(tiny_open_clip["model"])
    assert sha256_tree(build_tiny_clap(tmp_path / "clap")) == sha256_tree(tiny_clap)
