"""The pivot: Qwen3-Embedding (0.6B / 4B / 8B) through transformers.

As on the model card: left padding, the hidden state of the last token (the EOS the
tokenizer appends) as the embedding, L2 normalisation; documents are embedded as they
are, queries as "Instruct: {instruction}\\nQuery:{query}". Matryoshka truncation keeps
the first `dim` coordinates and normalises again.

Throughput: texts are tokenised once, sorted longest first and batched, so a batch pads
to a length close to that of its own texts (captions vary from 5 to 300 tokens; padding
everything to the longest of a random batch wastes most of the compute). A batch holds at
most `batch_size` texts and `max_batch_tokens` padded tokens, so on a GPU a large
`batch_size` fills the device with short captions while long texts come in smaller
batches. Longest first also means an out-of-memory error comes at the first batch, where
the halving backoff of `batching.run_in_batches` settles the limits for the rest.

Batch-order independence: position ids are counted from each text's first real token and
padding is masked out, so a text's vector does not depend on what it is batched with
(up to float rounding, ~1e-6 in float32).

`max_length` defaults to 512 tokens, not the card's 8192: the paper's captions are one
to a few sentences (radiology reports and PubChem descriptions run to a few hundred
tokens), and 512 bounds the memory of a batch that meets a pathological "caption". Texts
that reach the limit are counted in a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Encoder, resolve_dtype, torch_dtype
from .batching import run_in_batches
from .hub import WeightsSource
from .registry import register_encoder

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen3-Embedding-4B"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QUERY_FORMAT = "Instruct: {instruction}\nQuery:{query}"
DEFAULT_MAX_LENGTH = 512
DEFAULT_MAX_BATCH_TOKENS = 16384


def format_query(instruction: str, query: str) -> str:
    return QUERY_FORMAT.format(instruction=instruction, query=query)


def length_sorted_order(lengths: Sequence[int]) -> list[int]:
    """Indices longest first; ties keep input order (so the order is deterministic)."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int):
    """(input_ids, attention_mask) as int64 tensors, padded on the left to the longest."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s):] = torch.as_tensor(s, dtype=torch.long)
            mask[row, width - len(s):] = 1
    return ids, mask


def last_token_pool(hidden, mask):
    """Hidden state at each row's last unmasked position (works for either padding side)."""
    import torch

    last = mask.shape[1] - 1 - mask.flip(1).to(torch.int64).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


def embed_batch(model: Any, seqs: Sequence[Sequence[int]], pad_id: int, device: str,
                dim: int | None = None) -> np.ndarray:
    """One forward pass: left pad, last-token pool, optional Matryoshka cut, L2 normalise."""
    import torch
    import torch.nn.functional as F

    ids, mask = left_pad(seqs, pad_id)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    with torch.inference_mode():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                    position_ids=positions.to(device))
        vecs = last_token_pool(out.last_hidden_state, mask).float()
        if dim is not None:
            vecs = vecs[:, :dim]
        return F.normalize(vecs, dim=-1).cpu().numpy()


@register_encoder("qwen3-embedding")
class Qwen3EmbeddingEncoder(Encoder):
    """Qwen3-Embedding as the pivot: towers "text" (documents) and "query" (instructed)."""

    adapter = "qwen3-embedding"
    embed_code_version = "1"
    default_batch_size = 64
    towers = ("text", "query")
    modality = None

    def __init__(self, *, model: str = DEFAULT_MODEL, path: str | None = None,
                 revision: str | None = None, max_length: int = DEFAULT_MAX_LENGTH,
                 instruction: str = DEFAULT_INSTRUCTION, dim: int | None = None,
                 dtype: str = "auto", attn: str = "auto", device: str = "auto",
                 batch_size: int | None = None,
                 max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS) -> None:
        super().__init__(device=device, batch_size=batch_size)
        self.source = WeightsSource.from_options(model, path, revision, option="path")
        if int(max_length) < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction must be a non-empty string")
        if dim is not None and int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if max_batch_tokens is not None and int(max_batch_tokens) < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        self.max_batch_tokens = None if max_batch_tokens is None else int(max_batch_tokens)
        self.max_length = int(max_length)
        self.instruction = instruction
        self._dim_option = None if dim is None else int(dim)
        self._dtype_option = dtype
        self._attn_option = attn
        self._hidden_size: int | None = None
        self._model: Any = None
        self._tokenizer: Any = None

    # ---- identity and dimension (no weights needed) --------------------------------
    @property
    def dtype(self) -> str:
        return self.resolved_dtype(self._dtype_option)

    def _identity(self, tower: str) -> dict[str, Any]:
        ident = {
            **self.source.identity(),
            "pooling": "last_token",
            "padding": "left",
            "max_length": self.max_length,
            "dim": self._dim_option,
            "dtype": self.dtype,
            "normalisation": "l2",
        }
        if tower == "query":
            ident["instruction"] = self.instruction
            ident["query_format"] = QUERY_FORMAT
        return ident

    @property
    def hidden_size(self) -> int:
        if self._hidden_size is None:
            self._hidden_size = int(self.source.model_config().hidden_size)
        return self._hidden_size

    @property
    def dim(self) -> int:
        if self._dim_option is None:
            return self.hidden_size
        if self._dim_option > self.hidden_size:
            raise ValueError(f"encoder {self.name or self.adapter!r}: dim {self._dim_option} is larger "
                             f"than the model's hidden size {self.hidden_size}")
        return self._dim_option

    # ---- loading -----------------------------------------------------------------
    def _load_weights(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        device = self.device
        attn = "sdpa" if self._attn_option == "auto" else self._attn_option
        name, kwargs = self.source.load_args()
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, padding_side="left", **kwargs)
            model = AutoModel.from_pretrained(name, dtype=torch_dtype(self.dtype),
                                              attn_implementation=attn, **kwargs)
        except OSError as err:
            raise self.source.unavailable(err) from None
        self._hidden_size = int(model.config.hidden_size)
        self.dim  # validates a Matryoshka `dim` against the hidden size
        self._tokenizer = tokenizer
        self._model = model.to(device).eval()

    def unload(self) -> None:
        self._model = self._tokenizer = None

    @property
    def pad_id(self) -> int:
        tok = self._tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if pad is None:
            raise RuntimeError(f"tokenizer of {self.source.model!r} has neither a pad nor an eos token")
        return int(pad)

    # ---- encoding ----------------------------------------------------------------
    def tokenize(self, tower: str, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text (with the tokenizer's EOS), queries wrapped in the instruction."""
        self._ensure_loaded()
        if tower == "query":
            texts = [format_query(self.instruction, t) for t in texts]
        enc = self._tokenizer(list(texts), truncation=True, max_length=self.max_length,
                              padding=False, add_special_tokens=True)
        seqs = [list(ids) for ids in enc["input_ids"]]
        at_limit = sum(len(s) >= self.max_length for s in seqs)
        if at_limit:
            log.warning("%s: %d of %d texts reach max_length=%d tokens and are truncated",
                        self.name or self.adapter, at_limit, len(seqs), self.max_length)
        return seqs

    def _encode(self, tower: str, items: list[str], *, batch_size: int, progress: bool) -> np.ndarray:
        seqs = self.tokenize(tower, items)
        model, pad_id, device, dim = self._model, self.pad_id, self.device, self._dim_option

        def run(idx: list[int]) -> np.ndarray:
            return embed_batch(model, [seqs[i] for i in idx], pad_id, device, dim)

        lengths = [len(s) for s in seqs]
        vecs, _ = run_in_batches(len(seqs), run, batch_size=batch_size, order=length_sorted_order(lengths),
                                 costs=lengths, max_cost=self.max_batch_tokens, progress=progress,
                                 desc=f"{self.name or self.adapter} {tower}")
        return vecs
