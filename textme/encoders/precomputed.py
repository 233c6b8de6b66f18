"""The "precomputed" encoder: vectors a user produced elsewhere, looked up by key.

For encoders that need their authors' own code (LanguageBind, ViCLIP, Uni3D's point
tower, CXR-CLIP, MoleculeSTM) and no plugin yet: run the authors' code once, save the
vectors, and point this encoder at the files.

- `text`: vectors of captions, keyed by the exact caption text.
- `modal`: vectors of modal items, keyed by item id: by default the item file's stem
  (`items/000123.png` -> "000123"); `modal_key` may be "name", "path" or "sha256" (of the
  file's bytes).

A file is one of:
- `X.npy` [n, d] with a sidecar `X.keys.json` (JSON list of n strings) or `X.keys.txt`
  (one key per line);
- `X.parquet` with a key column (`key`, `text` or `id`) and a vector column (`vector` or
  `embedding`, a list of floats);
- `X.zarr`, a Zarr group with arrays `vectors` [n, d] and `keys` [n] (strings).

Every key asked for must be present (`missing()` checks in advance); a wrong dimension is
refused naming the file and both dimensions. The identity is the sha256 of the files, so
re-exported vectors form a new cache namespace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .base import Encoder
from .errors import EncoderInputError
from .hub import sha256_tree
from .inputs import MODAL_KEYS, item_id
from .registry import register_encoder

KEY_COLUMNS = ("key", "text", "id")
VECTOR_COLUMNS = ("vector", "embedding")


class VectorFile:
    """Keys and vectors of one file, read once; `rows(keys)` gathers them in order."""

    def __init__(self, path: str | Path, tower: str) -> None:
        self.path = Path(path).expanduser()
        self.tower = tower
        self._keys: list[str] | None = None
        self._vectors: np.ndarray | None = None
        self._index: dict[str, int] | None = None

    def files(self) -> list[Path]:
        if self.path.suffix == ".npy":
            return [self.path, self._sidecar()]
        return [self.path]

    def sha256(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for f in self.files():
            h.update(f.name.encode() + b"\0" + sha256_tree(f).encode() + b"\n")
        return h.hexdigest()

    def _sidecar(self) -> Path:
        for suffix in (".keys.json", ".keys.txt"):
            candidate = self.path.with_suffix(suffix)
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"precomputed {self.tower} vectors {self.path}: no sidecar keys file "
                                f"{self.path.with_suffix('.keys.json').name} or "
                                f"{self.path.with_suffix('.keys.txt').name}")

    def _read(self) -> tuple[list[str], np.ndarray]:
        if not self.path.exists():
            raise FileNotFoundError(f"precomputed {self.tower} vectors {self.path}: file not found")
        suffix = self.path.suffix
        if suffix == ".npy":
            vectors = np.load(self.path, allow_pickle=False)
            side = self._sidecar()
            keys = (json.loads(side.read_text(encoding="utf-8")) if side.suffix == ".json"
                    else side.read_text(encoding="utf-8").splitlines())
        elif suffix == ".parquet":
            keys, vectors = self._read_parquet()
        elif suffix == ".zarr":
            import zarr

            group = zarr.open_group(str(self.path), mode="r")
            vectors = np.asarray(group["vectors"][...])
            keys = [str(k) for k in np.asarray(group["keys"][...]).tolist()]
        else:
            raise ValueError(f"precomputed {self.tower} vectors {self.path}: unsupported format "
                             f"{suffix!r} (use .npy + .keys.json/.keys.txt, .parquet or .zarr)")
        return self._validate(list(keys), vectors)

    def _read_parquet(self) -> tuple[list[str], np.ndarray]:
        import pyarrow.parquet as pq

        table = pq.read_table(self.path)
        names = table.column_names
        key_col = next((c for c in KEY_COLUMNS if c in names), None)
        vec_col = next((c for c in VECTOR_COLUMNS if c in names), None)
        if key_col is None or vec_col is None:
            raise ValueError(f"precomputed {self.tower} vectors {self.path}: needs a key column "
                             f"({'/'.join(KEY_COLUMNS)}) and a vector column "
                             f"({'/'.join(VECTOR_COLUMNS)}); columns are {names}")
        keys = [str(k) for k in table.column(key_col).to_pylist()]
        lists = table.column(vec_col).to_pylist()
        lengths = {len(v) if v is not None else -1 for v in lists}
        if len(lengths) > 1 or -1 in lengths:
            raise ValueError(f"precomputed {self.tower} vectors {self.path}: column {vec_col!r} has "
                             f"rows of different lengths {sorted(lengths)[:5]} (or nulls)")
        return keys, np.asarray(lists, dtype=np.float32).reshape(len(lists), -1)

    def _validate(self, keys: list[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
        where = f"precomputed {self.tower} vectors {self.path}"
        if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
            raise ValueError(f"{where}: expected a non-empty [n, d] array, got shape {list(vectors.shape)}")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise ValueError(f"{where}: expected floating-point vectors, got {vectors.dtype}")
        if len(keys) != vectors.shape[0]:
            raise ValueError(f"{where}: {len(keys)} keys for {vectors.shape[0]} vectors")
        seen: dict[str, int] = {}
        for row, key in enumerate(keys):
            if key in seen:
                raise ValueError(f"{where}: key {key!r} appears twice (rows {seen[key]} and {row})")
            seen[key] = row
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if bad.size:
            raise ValueError(f"{where}: non-finite values in rows {bad[:5].tolist()}")
        self._index = seen
        return keys, vectors.astype(np.float32, copy=False)

    def load(self) -> None:
        if self._vectors is None:
            self._keys, self._vectors = self._read()

    @property
    def dim(self) -> int:
        self.load()
        return int(self._vectors.shape[1])  # type: ignore[union-attr]

    def missing(self, keys: list[str]) -> list[str]:
        self.load()
        assert self._index is not None
        return list(dict.fromkeys(k for k in keys if k not in self._index))

    def rows(self, keys: list[str]) -> np.ndarray:
        absent = self.missing(keys)
        if absent:
            first = ", ".join(repr(k if len(k) <= 60 else k[:57] + "...") for k in absent[:3])
            raise EncoderInputError(f"precomputed {self.tower} vectors {self.path}: {len(absent)} of "
                                    f"{len(set(keys))} keys missing (first: {first})")
        assert self._index is not None and self._vectors is not None
        return self._vectors[[self._index[k] for k in keys]]


@register_encoder("precomputed")
class PrecomputedEncoder(Encoder):
    """Vectors read from files; towers are those given ("text" and/or "modal")."""

    adapter = "precomputed"
    embed_code_version = "1"
    default_batch_size = 4096

    def __init__(self, *, text: str | None = None, modal: str | None = None,
                 modal_key: str = "stem", dim: int | None = None, modality: str | None = None,
                 device: str = "auto", batch_size: int | None = None) -> None:
        super().__init__(device=device, batch_size=batch_size)
        if text is None and modal is None:
            raise ValueError("precomputed needs `text` and/or `modal` (vector files)")
        if modal_key not in MODAL_KEYS:
            raise ValueError(f"modal_key {modal_key!r}: expected one of {', '.join(MODAL_KEYS)}")
        self.files = {t: VectorFile(p, t) for t, p in (("text", text), ("modal", modal)) if p is not None}
        self.towers = tuple(self.files)
        self.modal_key = modal_key
        self.expected_dim = None if dim is None else int(dim)
        self.modality = modality

    def _identity(self, tower: str) -> dict[str, Any]:
        vf = self.files[tower]
        return {"file": vf.path.name, "sha256": vf.sha256(),
                "key": "text" if tower == "text" else self.modal_key, "normalisation": "l2"}

    @property
    def dim(self) -> int:
        dims = {t: vf.dim for t, vf in self.files.items()}
        if self.expected_dim is not None:
            for t, d in dims.items():
                if d != self.expected_dim:
                    raise ValueError(f"precomputed {t} vectors {self.files[t].path}: dimension {d}, "
                                     f"expected dim {self.expected_dim}")
        if len(set(dims.values())) > 1:
            raise ValueError(f"precomputed text vectors {self.files['text'].path} have dimension "
                             f"{dims['text']} but modal vectors {self.files['modal'].path} have "
                             f"{dims['modal']}")
        return next(iter(dims.values()))

    def keys_for(self, tower: str, inputs: list[str]) -> list[str]:
        return list(inputs) if tower == "text" else [item_id(p, self.modal_key) for p in inputs]

    def missing(self, tower: str, inputs: list[str]) -> list[str]:
        """Keys (texts or item ids) the file lacks for `inputs`, first-seen order."""
        self._check_tower(tower)
        return self.files[tower].missing(self.keys_for(tower, inputs))

    def _encode(self, tower: str, items: list[str], *, batch_size: int, progress: bool) -> np.ndarray:
        self.dim  # dimension checks before any lookup
        return self.files[tower].rows(self.keys_for(tower, items))
