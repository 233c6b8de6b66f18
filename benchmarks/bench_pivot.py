"""Pivot embedding throughput: our length-sorted batching vs the plain loop, same run.

"ours" is the qwen3-embedding adapter's path (tokenise once, sort longest first, left pad
each batch to its own longest text, at most `--batch-size` texts and `--max-batch-tokens`
padded tokens per batch, out-of-memory backoff). "plain" is the model card's loop:
consecutive batches of `--batch-size` unsorted texts, tokenised and padded to the batch's
longest. Both use the same model and texts; the script checks that they give the same
vectors, then prints texts/s, useful tokens/s, the share of padding, and the speed-up.
Texts follow the length spread of the paper's caption sets: mostly one-line image
captions, some paragraph-long descriptions (PubChem), a few report-length texts.

Model configurations (random weights: the cost is the same as trained ones):
- `small` (default): a 4-layer, 256-wide Qwen3 saved and loaded through the adapter.
- `qwen3-4b`: Qwen3-Embedding-4B's architecture (36 layers, hidden 2560, 32 query / 8 kv
  heads, MLP 9728, vocabulary 151665), built in memory (bf16 on CUDA) and handed to the
  adapter (saving 8 GB of random weights would add nothing).
On CUDA it also reports model FLOP/s on useful (non-padding) tokens as a fraction of the
device's dense bf16 matmul rate, measured by the same script.
Token counts come from the tiny byte-level tokenizer (the real Qwen tokenizer is not
available offline); it splits text into more tokens than Qwen's, so texts/s understate
what the real model would do on the same texts, while tokens/s state it fairly.

    .venv/bin/python benchmarks/bench_pivot.py                                   # CPU
    .venv/bin/python benchmarks/bench_pivot.py --device cuda --model-config qwen3-4b
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from textme.encoders import get_encoder
from textme.encoders.batching import next_batch
from textme.encoders.qwen3 import last_token_pool, length_sorted_order
from textme.encoders.tiny import build_tiny_qwen3, qwen3_tokenizer, tiny_corpus

QWEN3_4B = dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                head_dim=128, intermediate_size=9728, vocab_size=151665, max_position_embeddings=40960,
                rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)


def make_texts(n: int, seed: int = 0) -> list[str]:
    """Captions with a realistic length spread: 75% 8-20 words, 20% 20-60, 5% 60-200."""
    rng = random.Random(seed)
    words = " ".join(tiny_corpus(seed)).replace(".", "").split()
    texts = []
    for _ in range(n):
        r = rng.random()
        lo, hi = (8, 20) if r < 0.75 else (20, 60) if r < 0.95 else (60, 200)
        start = rng.randrange(len(words) - hi)
        texts.append(" ".join(words[start:start + rng.randint(lo, hi)]).capitalize() + ".")
    return texts


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_loop(model, tokenizer, texts: list[str], batch_size: int, max_length: int, device: str):
    """The model card's loop: unsorted batches, each padded to its longest text."""
    out, padded = [], 0
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        padded += batch["input_ids"].numel()
        with torch.inference_mode():
            hidden = model(**{k: v.to(device) for k, v in batch.items()}).last_hidden_state
            out.append(F.normalize(last_token_pool(hidden, batch["attention_mask"]).float(), dim=-1).cpu())
    return torch.cat(out).numpy(), (padded, len(out))


def padded_tokens_sorted(lengths: list[int], batch_size: int, max_tokens: int | None) -> tuple[int, int]:
    """(padded tokens, batches) of the adapter's batches, planned by the adapter's own rule."""
    order, padded, pos, batches = length_sorted_order(lengths), 0, 0, 0
    while pos < len(order):
        idx = next_batch(order, pos, batch_size, lengths, max_tokens)
        padded += len(idx) * max(lengths[i] for i in idx)
        pos, batches = pos + len(idx), batches + 1
    return padded, batches


def matmul_rate(device: str, dtype: torch.dtype, size: int) -> float:
    """Measured dense matmul FLOP/s on this device and dtype (median of a few)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(5):
        _sync(device)
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        _sync(device)
        times.append((time.perf_counter() - t) / 10)
    return 2 * size ** 3 / statistics.median(times)


def useful_flops(cfg, lengths: list[int]) -> float:
    """Forward FLOPs on real tokens: 2 x non-embedding weights per token + causal attention."""
    h, layers = cfg.hidden_size, cfg.num_hidden_layers
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * cfg.intermediate_size
    dense = 2 * layers * per_layer * sum(lengths)
    attention = sum(4 * layers * q * n * (n + 1) / 2 for n in lengths)  # QK^T and AV, causal
    return dense + attention


def build(config: str, device: str, workdir: Path):
    """(encoder with its model loaded, model config, dtype name)."""
    if config == "small":
        folder = build_tiny_qwen3(workdir / "qwen3-small", hidden_size=256, num_layers=4)
        enc = get_encoder("qwen3-embedding", path=str(folder), device=device, dtype="float32")
        enc.encode_text(["warm up"])
        return enc, enc._model.config, "float32"
    from transformers import Qwen3Config, Qwen3Model

    tok = qwen3_tokenizer()
    cfg = Qwen3Config(**QWEN3_4B, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None)
    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    with torch.device(device):
        model = Qwen3Model._from_config(cfg, dtype=getattr(torch, dtype), attn_implementation="sdpa").eval()
    tok.save_pretrained(workdir / "tokenizer")
    (workdir / "tokenizer" / "config.json").write_text(cfg.to_json_string())
    enc = get_encoder("qwen3-embedding", path=str(workdir / "tokenizer"), device=device, dtype=dtype)
    enc._model, enc._tokenizer, enc._hidden_size = model, tok, cfg.hidden_size
    return enc, cfg, dtype


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-config", choices=["small", "qwen3-4b"], default="small")
    ap.add_argument("--texts", type=int, default=None, help="default: 384 (small), 4096 (qwen3-4b)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 64 (small), 256 (qwen3-4b)")
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (the CI box has 2 cores)")
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.texts or (512 if args.model_config == "small" else 4096)
    bs = args.batch_size or (64 if args.model_config == "small" else 256)
    texts = make_texts(n)

    with tempfile.TemporaryDirectory() as tmp:
        enc, cfg, dtype = build(args.model_config, args.device, Path(tmp))
        enc.max_length, enc.max_batch_tokens = args.max_length, args.max_batch_tokens
        model, tok = enc._model, enc._tokenizer
        lengths = [len(s) for s in enc.tokenize("text", texts)]

        ours = lambda: enc.encode_text(texts, batch_size=bs)  # noqa: E731
        plain = lambda: plain_loop(model, tok, texts, bs, args.max_length, args.device)  # noqa: E731
        a, (b, plain_padded) = ours(), plain()  # warm-up, and the agreement check
        t_ours, t_plain = [], []
        for _ in range(args.repeats):  # alternate, so load from other processes hits both
            _sync(args.device); t = time.perf_counter(); ours(); _sync(args.device)
            t_ours.append(time.perf_counter() - t)
            _sync(args.device); t = time.perf_counter(); plain(); _sync(args.device)
            t_plain.append(time.perf_counter() - t)
    s_ours, s_plain = statistics.median(t_ours), statistics.median(t_plain)
    useful = sum(lengths)
    ours_padded = padded_tokens_sorted(lengths, bs, args.max_batch_tokens)
    print(f"model {args.model_config} ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, {dtype}) "
          f"on {args.device}; {n} texts, {useful} tokens (min {min(lengths)}, median "
          f"{int(np.median(lengths))}, max {max(lengths)}), batch {bs} texts / "
          f"{args.max_batch_tokens} tokens, median of {args.repeats}, {torch.get_num_threads()} CPU threads")
    print(f"max |ours - plain| = {np.abs(a - b).max():.2e}")
    for name, secs, (padded, batches) in (("ours (length-sorted)", s_ours, ours_padded),
                                          ("plain (unsorted)", s_plain, plain_padded)):
        print(f"  {name:22s} {n / secs:9.1f} texts/s  {useful / secs:11.0f} tokens/s  "
              f"padding {1 - useful / padded:5.1%} in {batches:3d} batches  ({secs:.2f} s)")
    print(f"speed-up: {s_plain / s_ours:.2f}x")
    flops = useful_flops(cfg, lengths)
    print(f"useful model FLOP/s: ours {flops / s_ours / 1e12:.3f} TFLOP/s, plain "
          f"{flops / s_plain / 1e12:.3f} TFLOP/s")
    if args.device.startswith("cuda"):  # on a shared CPU the "peak" is as noisy as the run
        peak = matmul_rate(args.device, getattr(torch, dtype), 8192)
        print(f"measured {dtype} matmul rate {peak / 1e12:.1f} TFLOP/s: ours reaches "
              f"{flops / s_ours / peak:.1%} of it, plain {flops / s_plain / peak:.1%}")


if __name__ == "__main__":
    main()
