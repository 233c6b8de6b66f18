"""Modality centroids ("offsets"), their files, and centring.

A centroid is the mean of L2-normalised embeddings. Each encoder has a text centroid
(mu_text) and a modal centroid (mu_modal); their difference is the modality gap, which
TextME treats as a constant vector: text is centred with mu_text for training, modal
inputs with mu_modal at inference.

Two file formats:

- ours (`save_offset` / `load_offset`): a folder with `text_mean.npy`, optionally
  `modal_mean.npy`, and `offset.json` (dim, sample counts, both centroid norms, gap
  norm, caller metadata). Plain arrays and JSON: readable without pickle or torch.
- the official one (`save_official_offset` / `load_official_offset`): one pickle per
  centroid, `text_embed_mean.pkl` / `img_embed_mean.pkl`, holding a float tensor of
  shape [1, d]. Loading uses a restricted unpickler that only rebuilds tensors and
  arrays, so a hostile file cannot run code.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

#: File names of our own offset format.
TEXT_FILE, MODAL_FILE, META_FILE = "text_mean.npy", "modal_mean.npy", "offset.json"
#: File names the official code reads and writes.
OFFICIAL_TEXT_FILE, OFFICIAL_MODAL_FILE = "text_embed_mean.pkl", "img_embed_mean.pkl"

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x)


def as_vector(offset: Any, dim: int | None = None, what: str = "offset") -> np.ndarray:
    """An offset as float32 [d] (accepts [d] or [1, d], numpy or torch)."""
    if isinstance(offset, Offset):
        raise TypeError(f"{what}: got an Offset; pass its text_mean or modal_mean vector")
    vec = _to_numpy(offset)
    if vec.ndim == 2 and vec.shape[0] == 1:
        vec = vec[0]
    if vec.ndim != 1:
        raise ValueError(f"{what}: expected a vector [d] or [1, d], got shape {list(vec.shape)}")
    if dim is not None and vec.shape[0] != dim:
        raise ValueError(f"{what}: dimension {vec.shape[0]} does not match embeddings' {dim}")
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"{what}: contains NaN or inf")
    return vec.astype(np.float32, copy=False)


def centroid(embeddings: Any) -> np.ndarray:
    """Mean of the L2-normalised rows of `embeddings` [n, d] -> float32 [d].

    Rows are normalised first (in float64) so that a few long vectors cannot pull the
    centroid; a zero or non-finite row is an error naming its index. For rows that
    arrive in chunks, `CentroidAccumulator` gives the same float32 result bit for bit.
    """
    x = _to_numpy(embeddings)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"centroid: expected embeddings [n>0, d>0], got shape {list(x.shape)}")
    return CentroidAccumulator(x.shape[1]).add(x).mean()


class CentroidAccumulator:
    """`centroid` over rows that arrive in chunks (bounded memory: one chunk at a time).

    The float64 sum runs row after row, exactly as numpy reduces a whole array over
    axis 0, so the result does not depend on how the rows were cut.
    """

    def __init__(self, dim: int):
        self.dim = int(dim)
        self.n = 0
        self._sum = np.zeros(self.dim, dtype=np.float64)

    def add(self, rows: Any) -> CentroidAccumulator:
        x = _to_numpy(rows).astype(np.float64, copy=False)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"centroid: expected rows [n, {self.dim}], got shape {list(x.shape)}")
        norms = np.linalg.norm(x, axis=1)
        bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
        if bad.size:
            raise ValueError(
                f"centroid: row {self.n + int(bad[0])} is zero or not finite "
                f"({bad.size} such rows in this chunk of {x.shape[0]})"
            )
        unit = x / norms[:, None]
        self._sum = np.add.reduce(np.concatenate([self._sum[None], unit]), axis=0)
        self.n += x.shape[0]
        return self

    def mean(self) -> np.ndarray:
        if self.n == 0:
            raise ValueError("centroid: no rows were added")
        return (self._sum / self.n).astype(np.float32)


@dataclass
class Offset:
    """The two centroids of one encoder (the modal one may be unknown yet).

    text_mean / modal_mean: float32 [d]; n_text / n_modal: samples behind each
    (n_modal is 0 when modal_mean is None); metadata: what the caller stored with it.
    """

    text_mean: np.ndarray
    modal_mean: np.ndarray | None = None
    n_text: int = 0
    n_modal: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.text_mean = as_vector(self.text_mean, what="Offset.text_mean")
        if self.modal_mean is not None:
            self.modal_mean = as_vector(
                self.modal_mean, dim=self.dim, what="Offset.modal_mean"
            )
        elif self.n_modal:
            raise ValueError(f"Offset: n_modal={self.n_modal} but modal_mean is None")

    @classmethod
    def from_embeddings(cls, text: Any, modal: Any | None = None, **metadata: Any) -> Offset:
        """Centroids of text [n, d] and (optionally) modal [m, d] embeddings."""
        text_mean = centroid(text)
        modal_mean = None if modal is None else centroid(modal)
        return cls(text_mean, modal_mean, n_text=len(text),
                   n_modal=0 if modal is None else len(modal), metadata=metadata)

    @property
    def dim(self) -> int:
        return int(self.text_mean.shape[0])

    @property
    def gap(self) -> np.ndarray | None:
        """modal_mean - text_mean (None while modal_mean is unknown)."""
        return None if self.modal_mean is None else self.modal_mean - self.text_mean

    @property
    def gap_norm(self) -> float | None:
        gap = self.gap
        return None if gap is None else float(np.linalg.norm(gap))

    @property
    def norms(self) -> dict[str, float | None]:
        """Norms of both centroids: near 1 means tightly clustered embeddings."""
        return {
            "text": float(np.linalg.norm(self.text_mean)),
            "modal": None if self.modal_mean is None else float(np.linalg.norm(self.modal_mean)),
        }


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_offset(offset: Offset, folder: str | os.PathLike, **metadata: Any) -> Path:
    """Write `offset` into `folder` in our format; returns the folder.

    The arrays are written first and `offset.json` last, so a folder with a readable
    JSON file is complete. `metadata` (JSON-able) is stored with the offset's own.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {**offset.metadata, **metadata}
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save_offset: metadata is not JSON-able: {exc}") from None
    _atomic_write(folder / TEXT_FILE, lambda fh: np.save(fh, offset.text_mean))
    if offset.modal_mean is not None:
        _atomic_write(folder / MODAL_FILE, lambda fh: np.save(fh, offset.modal_mean))
    elif (folder / MODAL_FILE).exists():
        (folder / MODAL_FILE).unlink()  # a stale one would be read back as ours
    norms = offset.norms
    record = {
        "format": "textme-offset",
        "format_version": 1,
        "dim": offset.dim,
        "n_text": int(offset.n_text),
        "n_modal": int(offset.n_modal),
        "text_norm": norms["text"],
        "modal_norm": norms["modal"],
        "gap_norm": offset.gap_norm,
        "metadata": meta,
    }
    text = json.dumps(record, indent=2, sort_keys=True).encode()
    _atomic_write(folder / META_FILE, lambda fh: fh.write(text))
    return folder


def load_offset(folder: str | os.PathLike) -> Offset:
    """Read an offset written by `save_offset`; errors name the file at fault."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"no offset at {folder}: {META_FILE} is missing")
    try:
        record = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: not valid JSON ({exc})") from None
    for key in ("dim", "n_text", "n_modal"):
        if not isinstance(record.get(key), int):
            raise ValueError(f"{meta_path}: field {key!r} missing or not an int")

    def read(name: str) -> np.ndarray:
        path = folder / name
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read array ({exc})") from None
        if arr.shape != (record["dim"],):
            raise ValueError(f"{path}: shape {list(arr.shape)}, {META_FILE} says [{record['dim']}]")
        return arr

    modal = read(MODAL_FILE) if record["n_modal"] or (folder / MODAL_FILE).exists() else None
    return Offset(read(TEXT_FILE), modal, n_text=record["n_text"], n_modal=record["n_modal"],
                  metadata=dict(record.get("metadata") or {}))


# --- official pickles ---------------------------------------------------------------


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Rebuilds torch tensors and numpy arrays, nothing else."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor"),
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            # The stock version calls torch.load(weights_only=False); stay safe.
            return lambda b: torch.load(io.BytesIO(b), weights_only=True)
        if module == "torch" and name.endswith("Storage"):
            return getattr(torch, name)
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_official_offset(path: str | os.PathLike) -> np.ndarray:
    """Read an official `*_embed_mean.pkl` (a pickled [1, d] or [d] tensor or array)
    -> float32 [d]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"offset file not found: {path}")
    try:
        with path.open("rb") as fh:
            obj = _TensorOnlyUnpickler(fh).load()
    except Exception as exc:
        raise ValueError(f"{path}: not an offset pickle of a tensor or array ({exc})") from exc
    if not isinstance(obj, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, expected a tensor or array")
    return as_vector(obj, what=str(path))


def save_official_offset(vector: Any, path: str | os.PathLike) -> Path:
    """Write a centroid as the official code does: pickled float32 CPU tensor [1, d]."""
    path = Path(path)
    vec = torch.from_numpy(as_vector(vector, what="save_official_offset").copy())
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda fh: pickle.dump(vec.reshape(1, -1), fh))
    return path


# --- centring ------------------------------------------------------------------------


def process_embeddings(
    embeddings: ArrayOrTensor,
    offset: Any = None,
    noise_std: float = 0.0,
    uniform_noise: bool = False,
    *,
    generator: torch.Generator | np.random.Generator | None = None,
) -> ArrayOrTensor:
    """Subtract `offset` from every row, then optionally add noise (official semantics).

    embeddings: [n, d] numpy array or torch tensor; the result is the same kind (and,
    for tensors, on the same device and dtype). offset: None, or a [d] / [1, d] vector
    (numpy or torch). noise_std > 0 adds Gaussian noise of that std; with
    `uniform_noise`, a random direction scaled by U(0, 1) * noise_std instead (the
    official "uniform ball": uniform radius, so not uniform in volume). `generator`
    makes the noise reproducible (torch.Generator for tensors, numpy Generator for arrays).
    """
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    if not isinstance(embeddings, (torch.Tensor, np.ndarray)):
        raise TypeError(
            f"embeddings must be a numpy array or torch tensor, got {type(embeddings).__name__}"
        )
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings: expected [n, d], got shape {list(embeddings.shape)}")
    if isinstance(embeddings, torch.Tensor):
        gen = generator if isinstance(generator, torch.Generator) else None
        return _process_tensor(embeddings, offset, noise_std, uniform_noise, gen)
    rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng()
    return _process_array(embeddings, offset, noise_std, uniform_noise, rng)


def _process_tensor(
    x: torch.Tensor, offset: Any, noise_std: float, uniform: bool, gen: torch.Generator | None
) -> torch.Tensor:
    dim = x.shape[1]
    if offset is not None:
        if isinstance(offset, torch.Tensor):
            off = offset.reshape(-1)
            if off.shape[0] != dim:
                raise ValueError(
                    f"offset: dimension {off.shape[0]} does not match embeddings' {dim}"
                )
        else:
            off = torch.from_numpy(as_vector(offset, dim))
        x = x - off.to(device=x.device, dtype=x.dtype)
    if noise_std > 0:
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        if uniform:
            radius = torch.rand((x.shape[0], 1), generator=gen, device=x.device, dtype=x.dtype)
            noise = F.normalize(noise, dim=-1) * radius
        x = x + noise * noise_std
    return x


def _process_array(
    x: np.ndarray, offset: Any, noise_std: float, uniform: bool, rng: np.random.Generator
) -> np.ndarray:
    if offset is not None:
        x = x - as_vector(offset, x.shape[1]).astype(x.dtype, copy=False)
    if noise_std > 0:
        noise = rng.standard_normal(x.shape)
        if uniform:
            noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
            noise *= rng.random((x.shape[0], 1))
        x = x + (noise * noise_std).astype(x.dtype, copy=False)
    return x
