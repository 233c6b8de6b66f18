"""The one interface every encoder (built-in, plugin, precomputed) presents.

An encoder has named *towers*: "text" (captions), "modal" (files of its modality) and,
for a pivot LLM embedder, "query" (texts wrapped in its retrieval instruction). Each
tower maps a list of inputs to float32 rows of unit length, or, with `normalize` off
(`get_encoder(name, normalize=False)`), to the model's own outputs as its library returns
them: what the official TextME wrappers centre for some encoders (raw open_clip
features). The identity then says `"normalisation": "none"`, so raw and unit vectors
never share a cache namespace. `identity(tower)` is a small
JSON-able dict of everything that changes that tower's output and nothing that does not
(device, batch size, progress): the embedding cache keys its namespaces on it, so it
must be cheap and must never load weights.

Subclasses implement `dim`, `_identity(tower)` and `_encode(tower, items, ...)`; this
base checks the towers and the inputs before, and the shape, finiteness and norm of the
output after.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from .batching import run_in_batches
from .inputs import check_items, check_texts

TEXT_TOWERS = ("text", "query")
DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; anything else unchanged."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str, *, auto_on_cuda: str = "bfloat16") -> str:
    """"auto" -> `auto_on_cuda` on a CUDA device, "float32" elsewhere; checked against DTYPES."""
    if dtype == "auto":
        dtype = auto_on_cuda if device.startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected 'auto' or one of {', '.join(DTYPES)}")
    return dtype


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class Encoder(ABC):
    """Base class of all encoders; see the module docstring for the contract."""

    adapter: ClassVar[str] = ""  # stable adapter id, part of every identity
    embed_code_version: ClassVar[str] = "1"  # bump when this adapter's output changes
    default_batch_size: ClassVar[int] = 32

    name: str = ""  # the registry name it was created under (set by get_encoder)
    modality: str | None = None
    towers: tuple[str, ...] = ("text", "modal")
    normalize: bool = True  # False: outputs as the model gives them (set_normalize)

    def __init__(self, *, device: str = "auto", batch_size: int | None = None) -> None:
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._device_option = device
        self.batch_size = int(batch_size or self.default_batch_size)
        # The pipeline shares one encoder object between its text and modal embed tasks,
        # which run in parallel threads: weights must load once, and wholly, before use.
        self._load_lock = threading.Lock()

    # ---- what subclasses provide -------------------------------------------------
    @property
    @abstractmethod
    def dim(self) -> int:
        """Output dimension, read from the model's own config (loading it if needed)."""

    @abstractmethod
    def _identity(self, tower: str) -> dict[str, Any]:
        """Tower-specific identity fields (model, weights, pooling, preprocessing...)."""

    @abstractmethod
    def _encode(self, tower: str, items: list[str], *, batch_size: int, progress: bool) -> np.ndarray:
        """Embed checked, non-empty `items`; rows in input order (normalised afterwards)."""

    def _load_weights(self) -> None:
        """Load the model; set `self._model` last (it marks the load complete)."""

    def _ensure_loaded(self) -> None:
        """`_load_weights` once, even when several threads encode at the same time."""
        if getattr(self, "_model", None) is not None:
            return
        with self._load_lock:
            if getattr(self, "_model", None) is None:
                self._load_weights()

    def unload(self) -> None:
        """Drop loaded weights (they are reloaded on the next encode)."""

    # ---- the public interface ----------------------------------------------------
    @property
    def device(self) -> str:
        return resolve_device(self._device_option)

    def resolved_dtype(self, dtype: str, *, auto_on_cuda: str = "bfloat16") -> str:
        """`resolve_dtype` for this encoder. The device (a torch import and a CUDA probe)
        is looked at only for "auto", so an identity with a set dtype needs no torch."""
        return resolve_dtype(dtype, self.device if dtype == "auto" else "cpu", auto_on_cuda=auto_on_cuda)

    def set_normalize(self, normalize: bool) -> "Encoder":
        """Unit rows (True, the default) or the model's own outputs (False); returns self."""
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        self.normalize = normalize
        return self

    def identity(self, tower: str) -> dict[str, Any]:
        self._check_tower(tower)
        ident: dict[str, Any] = {
            "adapter": self.adapter,
            "embed_code_version": self.embed_code_version,
            "tower": tower,
        }
        ident.update(self._identity(tower))
        if not self.normalize:  # unit-norm identities stay as they were: no cache is orphaned
            ident["normalisation"] = "none"
        return ident

    def encode(self, tower: str, inputs: Any, *, batch_size: int | None = None,
               progress: bool = False) -> np.ndarray:
        """float32 [n, dim] in the order of `inputs`; rows L2-normalised unless `normalize` is off."""
        self._check_tower(tower)
        items = check_texts(inputs) if tower in TEXT_TOWERS else check_items(inputs)
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not items:
            return np.zeros((0, self.dim), np.float32)
        vecs = self._encode(tower, items, batch_size=int(batch_size or self.batch_size),
                            progress=progress)
        return self._finish(tower, vecs, len(items))

    def encode_text(self, texts: Any, **kwargs: Any) -> np.ndarray:
        return self.encode("text", texts, **kwargs)

    def encode_modal(self, items: Any, **kwargs: Any) -> np.ndarray:
        return self.encode("modal", items, **kwargs)

    # ---- helpers -----------------------------------------------------------------
    def _in_batches(self, tower: str, items: list[str], batch: Callable[[list[str]], np.ndarray], *,
                    batch_size: int, progress: bool) -> np.ndarray:
        """`batch` over consecutive slices of `items` (progress bar, OOM backoff)."""
        vecs, _ = run_in_batches(len(items), lambda idx: batch([items[i] for i in idx]),
                                 batch_size=batch_size, progress=progress,
                                 desc=f"{self.name or self.adapter} {tower}")
        return vecs

    def _check_tower(self, tower: str) -> None:
        if tower not in self.towers:
            raise ValueError(f"encoder {self.name or self.adapter!r} has no tower {tower!r}; "
                             f"towers: {', '.join(self.towers)}")

    def _finish(self, tower: str, vecs: Any, n: int) -> np.ndarray:
        vecs = np.asarray(vecs, dtype=np.float32)
        label = f"encoder {self.name or self.adapter!r} tower {tower!r}"
        if vecs.shape != (n, self.dim):
            raise RuntimeError(f"{label}: expected shape [{n}, {self.dim}], got {list(vecs.shape)}")
        bad = np.flatnonzero(~np.isfinite(vecs).all(axis=1))
        if bad.size:
            raise RuntimeError(f"{label}: non-finite output for items {bad[:5].tolist()}")
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        zero = np.flatnonzero(norms[:, 0] == 0)
        if zero.size:
            raise RuntimeError(f"{label}: zero vector for items {zero[:5].tolist()}")
        return vecs / norms if self.normalize else vecs

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, modality={self.modality!r}, "
                f"towers={self.towers!r})")
