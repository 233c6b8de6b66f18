"""Stable content hashes: the same input gives the same key on any machine and Python.

Everything the pipeline caches is named by one of these:

- `fingerprint(obj)`: sha256 over the canonical JSON of a config section, an encoder
  identity, a stage's inputs. Chained: `fingerprint(params, parent=fp_of_input)`.
- `text_key(text)`: a caption's key, over its normalised text (`normalize_text`).
- `bytes_key(data)` / `file_key(path)`: a modal item's key, over its bytes.

Canonical JSON refuses anything it cannot write the same way everywhere (sets, bytes,
arbitrary objects, NaN): a `TypeError` names the field. It never falls back to `repr`,
pickle or a random key, because a key that changes between runs silently recomputes,
and a key that collides silently serves the wrong vectors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import unicodedata
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

__all__ = [
    "FINGERPRINT_VERSION",
    "canonical_json",
    "fingerprint",
    "normalize_text",
    "text_key",
    "bytes_key",
    "file_key",
    "is_fingerprint",
]

#: Part of every `fingerprint`. Bump only on purpose: it renames every cached thing.
FINGERPRINT_VERSION = "fp1"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_READ_BLOCK = 1 << 22


def canonical_json(obj: Any, *, root: str = "value") -> str:
    """One JSON text per value: sorted keys, compact separators, ASCII only.

    Accepted: dict/Mapping with str keys, list, tuple (written as a list), str, int,
    float (finite, written by `repr`, so 1.0 and 1 differ), bool, None, numpy scalars
    (converted to the Python type) and paths (written as str). Anything else, including
    NaN and infinities, raises `TypeError` naming the field path from `root`, e.g.
    ``config.training.lr`` or ``value.layers[2]``.
    """
    return "".join(_encode(obj, root))


def _encode(obj: Any, path: str) -> list[str]:
    out: list[str] = []
    _write(obj, path, out)
    return out


def _write(obj: Any, path: str, out: list[str]) -> None:
    # bool before int: bool is a subclass of int, and True must not become 1.
    if obj is None:
        out.append("null")
    elif isinstance(obj, (bool, np.bool_)):
        out.append("true" if obj else "false")
    elif isinstance(obj, (int, np.integer)):
        out.append(str(int(obj)))
    elif isinstance(obj, (float, np.floating)):
        value = float(obj)
        if not math.isfinite(value):
            raise TypeError(f"{path}: {value!r} cannot be fingerprinted (NaN and infinities are refused)")
        out.append(repr(value))
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=True))
    elif isinstance(obj, PurePath):
        out.append(json.dumps(str(obj), ensure_ascii=True))
    elif isinstance(obj, Mapping):
        for key in obj:
            if not isinstance(key, str):
                raise TypeError(f"{path}: key {key!r} is a {type(key).__name__}; only str keys can be fingerprinted")
        out.append("{")
        for i, key in enumerate(sorted(obj)):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=True))
            out.append(":")
            _write(obj[key], f"{path}.{key}", out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, item in enumerate(obj):
            if i:
                out.append(",")
            _write(item, f"{path}[{i}]", out)
        out.append("]")
    else:
        raise TypeError(
            f"{path}: a {type(obj).__module__}.{type(obj).__qualname__} cannot be fingerprinted; "
            "use dicts, lists, str, int, float, bool, None (convert dataclasses with dataclasses.asdict)"
        )


def is_fingerprint(value: object) -> bool:
    """True for a 64-character lowercase sha256 hex digest."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def fingerprint(obj: Any, *, parent: str | None = None, kind: str | None = None) -> str:
    """sha256 hex of `obj`'s canonical JSON, chained from `parent` and tagged by `kind`.

    The hashed text is ``canonical_json([FINGERPRINT_VERSION, kind, parent, obj])``:
    the same object under another kind or parent gets another fingerprint, so a stage's
    output key changes whenever any input's key does. `parent` must itself be a
    fingerprint (64 hex digits). Parameters must be passed fully resolved, defaults
    included: a changed default has to change the key.
    """
    if parent is not None and not is_fingerprint(parent):
        raise ValueError(f"parent must be a sha256 hex fingerprint (64 lowercase hex digits), got {parent!r}")
    if kind is not None and not isinstance(kind, str):
        raise TypeError(f"kind must be a str, got {type(kind).__name__}")
    # Same text as canonical_json([version, kind, parent, obj]), written so that an
    # error inside obj names its field as value.x rather than value[3].x.
    head = canonical_json([FINGERPRINT_VERSION, kind, parent])[:-1]
    text = f"{head},{canonical_json(obj, root='value')}]"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def normalize_text(text: str) -> str:
    """The form of a caption that its key is computed from.

    Exactly three steps: Unicode NFC composition (so an "é" typed as one code point or
    as "e" + combining accent is the same caption), every run of whitespace (as
    `str.split` sees it: spaces, tabs, newlines, no-break and other Unicode spaces)
    replaced by one ASCII space, and the ends stripped. Case, punctuation and
    zero-width characters are kept: encoders see them, so they are different inputs.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects str, got {type(text).__name__}")
    return " ".join(unicodedata.normalize("NFC", text).split())


def text_key(text: str) -> str:
    """Cache key of a caption: sha256 hex of its normalised text in UTF-8."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def bytes_key(data: bytes | bytearray | memoryview) -> str:
    """Cache key of an in-memory item: sha256 hex of its bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"bytes_key expects bytes, got {type(data).__name__}")
    return hashlib.sha256(data).hexdigest()


def file_key(path: str | os.PathLike[str]) -> str:
    """Cache key of a file: sha256 hex of its bytes (equal to `bytes_key` of its content).

    Streams the file, so large items are never held in memory. `path` may be a local
    path or any fsspec URL (file://, memory://, s3://...).
    """
    target = os.fspath(path)
    if "://" not in target:  # a local path: fsspec's lookup per call costs 3x hashing a small item
        with open(target, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    import fsspec  # local import: only file_key needs it

    fs, fs_path = fsspec.core.url_to_fs(target)
    digest = hashlib.sha256()
    with fs.open(fs_path, "rb") as f:
        while block := f.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()
