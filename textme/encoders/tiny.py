"""Tiny models of the real classes, for tests and the offline demo.

Each builder saves a randomly initialised (seeded) model of the same class the real
adapter loads, in the same on-disk format, so loading and running it goes through the
real code: `Qwen3Model` + a byte-level BPE `Qwen2Tokenizer` (trained with `tokenizers`,
appending <|endoftext|> like Qwen3-Embedding's), an open_clip model from a small custom
JSON config + safetensors checkpoint, and a `ClapModel` + `ClapProcessor` at 48 kHz.

Builders are deterministic given `seed`, idempotent (a complete folder is left alone;
completeness is a marker file written last) and safe to race: a model is built in a
temporary sibling folder and moved into place file by file, marker last.
Their outputs mean nothing: they are stand-ins, and results computed with them say so.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MARKER = ".textme-tiny.json"
TINY_VERSION = 1
TINY_CLIP_NAME = "textme-tiny-clip"

_SUBJECTS = ["a dog", "a cat", "a child", "an old man", "a woman", "a red car", "a small bird",
             "a horse", "two people", "a train", "a guitar player", "a crowd", "a chair", "a robot"]
_VERBS = ["runs across", "sits on", "stands near", "jumps over", "sleeps under", "plays beside",
          "walks along", "looks at", "rolls down", "waits at"]
_PLACES = ["the grass", "a wooden table", "the beach", "a busy street", "the kitchen", "a snowy hill",
           "the river", "a quiet park", "the station", "a stone wall"]
_DETAILS = ["in the morning", "at night", "while it rains", "under a blue sky", "with loud music",
            "as birds sing", "near a barking dog", "with a soft echo", "", ""]
_EXTRA = ["An x-ray shows clear lungs.", "The molecule is an aromatic ring with a hydroxyl group.",
          "A satellite image of farmland and a river.", "A 3D model of a wooden chair.",
          "Instruct: Given a web search query, retrieve relevant passages that answer the query",
          "Query: what sound does a dog make?"]


def tiny_corpus(seed: int = 0, n: int = 300) -> list[str]:
    """A few hundred short captions (images, sounds, shapes) for training tiny tokenizers."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_PLACES)} {rng.choice(_DETAILS)}"
        out.append(text.strip().capitalize() + ".")
    return out + _EXTRA


def _complete(folder: Path, kind: str, seed: int) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except ValueError:
        return False
    return (info.get("kind") == kind and info.get("seed") == seed and info.get("version") == TINY_VERSION
            and all((folder / f).is_file() for f in info.get("files", [])))


def _build_once(folder: str | os.PathLike[str], kind: str, seed: int,
                build: Callable[[Path], None]) -> Path:
    """Run `build(tmp)` unless `folder` already holds a complete build; move it into place."""
    folder = Path(folder).expanduser().resolve()
    if _complete(folder, kind, seed):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / MARKER).write_text(json.dumps({"kind": kind, "seed": seed, "version": TINY_VERSION,
                                              "files": files}, indent=1))
        if not folder.exists():
            try:
                os.rename(tmp, folder)
                return folder
            except OSError:  # another process won the race: fall through to per-file moves
                pass
        for rel in files + [MARKER]:  # the marker last: the folder is complete only then
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, folder / rel)
        return folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _train_bpe(seed: int, vocab_size: int, special: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE (vocab, merges) trained on the tiny corpus; deterministic."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tiny_corpus(seed), trainer)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(tok.to_str())["model"]["merges"]]
    return tok.get_vocab(), merges  # type: ignore[return-value]


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch for a model's initialisation without disturbing the caller's RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def qwen3_tokenizer(seed: int = 0, vocab_size: int = 512) -> Any:
    """A `Qwen2Tokenizer` (the class Qwen3-Embedding uses) that appends <|endoftext|>."""
    from tokenizers import processors
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_bpe(seed, vocab_size, ["<|endoftext|>"])
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, padding_side="left")
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", pair="$A <|endoftext|> $B <|endoftext|>",
        special_tokens=[("<|endoftext|>", eos)])
    return tok


def build_tiny_qwen3(folder: str | os.PathLike[str], *, seed: int = 0, hidden_size: int = 32,
                     num_layers: int = 2) -> Path:
    """A small `Qwen3Model` (2 layers, hidden 32 by default) + tokenizer in `folder`.

    Load it with `get_encoder("qwen3-embedding", path=folder)`. The benchmark builds a
    larger one (`hidden_size=256, num_layers=4`) with the same code.
    """

    def build(out: Path) -> None:
        from transformers import Qwen3Config, Qwen3Model

        tok = qwen3_tokenizer(seed)
        heads = max(2, hidden_size // 64)
        cfg = Qwen3Config(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=3 * hidden_size,
                          num_hidden_layers=num_layers, num_attention_heads=heads,
                          num_key_value_heads=max(1, heads // 2), head_dim=hidden_size // heads,
                          max_position_embeddings=1024, tie_word_embeddings=True,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
        with _seeded(seed):
            model = Qwen3Model(cfg)
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return _build_once(folder, f"qwen3-h{hidden_size}-l{num_layers}", seed, build)


TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def build_tiny_open_clip(folder: str | os.PathLike[str], *, seed: int = 0) -> dict[str, str]:
    """A tiny open_clip CLIP (custom JSON config + safetensors checkpoint) in `folder`.

    Returns the options for `get_encoder("open-clip", **options)`: `model` is the JSON
    config file (its stem names the architecture), `pretrained` the checkpoint.
    """
    config_name, ckpt_name = f"{TINY_CLIP_NAME}.json", f"{TINY_CLIP_NAME}.safetensors"

    def build(out: Path) -> None:
        import open_clip
        from safetensors.torch import save_file

        (out / config_name).write_text(json.dumps(TINY_CLIP_CONFIG, indent=1, sort_keys=True))
        open_clip.add_model_config(out / config_name)
        with _seeded(seed):
            model = open_clip.create_model(TINY_CLIP_NAME)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / ckpt_name))

    root = _build_once(folder, "open-clip", seed, build)
    return {"model": str(root / config_name), "pretrained": str(root / ckpt_name)}


def build_tiny_clap(folder: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """A tiny `ClapModel` + `ClapProcessor` (48 kHz, 1 s window) in `folder`."""

    def build(out: Path) -> None:
        from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

        vocab, merges = _train_bpe(seed, 384, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        tok = RobertaTokenizer(vocab=vocab, merges=merges)
        fe = ClapFeatureExtractor(feature_size=16, sampling_rate=48000, hop_length=480, max_length_s=1,
                                  fft_window_size=512, truncation="rand_trunc", padding="repeatpad")
        text = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                    bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        audio = dict(spec_size=64, num_mel_bins=16, window_size=4, patch_size=2, patch_stride=2,
                     patch_embeds_hidden_size=16, hidden_size=32, depths=[1, 1],
                     num_attention_heads=[2, 2], enable_fusion=False, num_hidden_layers=2)
        with _seeded(seed):
            model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=32))
        model.save_pretrained(out)
        ClapProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(out)

    return _build_once(folder, "clap", seed, build)
