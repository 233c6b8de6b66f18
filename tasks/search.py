"""Any-modality search over the unified index: `textme search CONFIG QUERY`.

The index stage (tasks/index.py) has put every encoder's corpus into the pivot space;
search reads those vectors and projects nothing but the query:

- a text query is the pivot's query-tower embedding of the text (the LLM's own space);
- a file (image, audio, point cloud, ...) goes through the encoder whose modality reads
  its extension (`MODALITY_EXTENSIONS`; `--encoder` picks one when several do), centred
  with that encoder's mu_modal and projected by the same head as its index.

The query is then ranked against every encoder's index together (or those of one
`--modality`): all scores are cosines in the one pivot space, so each index gives its
top k and the best k of those are the answer. An index is read from the cache in
blocks of `READ_BLOCK` rows and ranked block by block with a running top-k
(textme.metrics.streamed_top_k), never as one matrix; a large index with faiss
installed is searched through its ANN index instead (tasks/ann.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks import keys
from tasks.common import open_cache
from tasks.config import ConfigError, PipelineConfig
from tasks.index import encoder_modality, read_index_items

__all__ = ["search", "Hit", "SearchResult", "current_indexes", "query_encoder", "MODALITY_EXTENSIONS", "READ_BLOCK"]

#: Index rows read from the cache and scored per block.
READ_BLOCK = 65_536

#: File extensions each modality's encoders read (lower case). An encoder whose modality
#: is not listed here is chosen for a file only with `--encoder`.
MODALITY_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
    "satellite": (".png", ".jpg", ".jpeg", ".tif", ".tiff"),
    "xray": (".png", ".jpg", ".jpeg", ".dcm"),
    "audio": (".wav", ".flac", ".mp3", ".ogg"),
    "point": (".ply", ".pcd", ".xyz", ".npy", ".off", ".obj"),
    "video": (".mp4", ".avi", ".mov", ".mkv", ".webm"),
    "molecule": (".smi", ".sdf", ".mol", ".mol2"),
}
_KNOWN_EXTENSIONS = {ext for exts in MODALITY_EXTENSIONS.values() for ext in exts}


@dataclass(frozen=True)
class Hit:
    score: float
    modality: str | None
    encoder: str
    item: str
    key: str

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "modality": self.modality, "encoder": self.encoder, "item": self.item,
                "key": self.key}


@dataclass
class SearchResult:
    query: str
    kind: str  # "text" or "file"
    query_encoder: str  # "pivot" for text
    hits: list[Hit]
    stand_in: bool
    exact: dict[str, bool] = field(default_factory=dict)  # per encoder: exact (True) or ANN
    missing: list[str] = field(default_factory=list)  # encoders without a current index

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.query, "kind": self.kind, "query_encoder": self.query_encoder,
                "stand_in": self.stand_in, "exact": self.exact, "missing_index": self.missing,
                "hits": [h.as_dict() for h in self.hits]}


def current_indexes(cfg: PipelineConfig) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """({encoder: index manifest} of the current config, [indexable encoders without one])."""
    from tasks.plan import replay

    rep = replay(cfg)
    found = {e: st.manifest for e, st in rep.index.items() if st.manifest is not None}
    return found, [e for e in rep.index if e not in found]


def _looks_like_file(query: str) -> bool:
    return Path(query).suffix.lower() in _KNOWN_EXTENSIONS and not any(c.isspace() for c in query)


def query_encoder(cfg: PipelineConfig, query: str, indexes: dict[str, dict[str, Any]],
                  encoder: str | None = None) -> str:
    """The encoder that embeds a file query: `encoder` if given, else the one indexed
    encoder whose modality reads the file's extension (one line when none or several)."""
    if encoder is not None:
        if encoder not in cfg.encoders:
            raise ConfigError(f"{cfg.path}: --encoder {encoder!r}: unknown encoder (known: {', '.join(cfg.encoders)})")
        if encoder not in indexes:
            raise ConfigError(f"{cfg.path}: --encoder {encoder!r}: no index (indexed: {', '.join(indexes) or 'none'}); "
                              f"run `textme run {cfg.path}` first")
        return encoder
    ext = Path(query).suffix.lower()
    candidates = [e for e, m in indexes.items() if ext in MODALITY_EXTENSIONS.get(m["modality"] or "", ())]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        readers = ", ".join(f"{e} ({m['modality']})" for e, m in indexes.items())
        raise ConfigError(f"{query}: no indexed encoder reads {ext or 'files without an extension'!r} files "
                          f"(indexed: {readers}); name one with --encoder")
    raise ConfigError(f"{query}: {ext} files are read by {len(candidates)} encoders ({', '.join(candidates)}); "
                      f"choose one with --encoder {candidates[0]}")


def _text_query(cfg: PipelineConfig, text: str) -> np.ndarray:
    from storage.fingerprint import normalize_text

    return keys.encoder_of(cfg, "pivot").encode("query", [normalize_text(text)])


def _file_query(cfg: PipelineConfig, path: str, manifest: dict[str, Any]) -> np.ndarray:
    """The file through its encoder (its cached vector when the cache has it), centred
    and projected exactly as the index's items were."""
    from tasks.integrity import check_file, checked_offset_dir
    from tasks.sources import cached_file_key
    from textme import load_offset, load_projection, project

    encoder = manifest["encoder"]
    ns = open_cache(cfg).open_namespace(manifest["modal_namespace"])
    key = cached_file_key(path)
    raw = ns.get([key]) if ns.contains(key) else keys.encoder_of(cfg, encoder).encode("modal", [path])
    offset = load_offset(checked_offset_dir(cfg, manifest["offset_dir"], manifest.get("offset_sha256"), encoder)
                         ).modal_mean if manifest.get("offset_dir") else None
    head = check_file(manifest["projection"], manifest.get("projection_sha256"), config=str(cfg.path or "CONFIG"),
                      what=f"stage train of encoder {encoder!r}")
    return project(load_projection(head), raw, offset=offset)


def _exact_top_k(ns: Any, item_keys: list[str], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from textme.metrics import streamed_top_k

    blocks = (ns.get(item_keys[s : s + READ_BLOCK]) for s in range(0, len(item_keys), READ_BLOCK))
    return streamed_top_k(queries, blocks, k)


def _ann_top_k(cfg: PipelineConfig, manifest: dict[str, Any], ns: Any, item_keys: list[str],
               queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from tasks.ann import ann_path, ann_top_k, build_ann, load_ann

    path = manifest.get("ann_file") or str(ann_path(cfg, manifest["key"]))
    if not os.path.isfile(path):  # faiss installed after the index was built: build it once now
        path = str(build_ann(cfg, ns, item_keys, manifest["key"]))
    return ann_top_k(load_ann(path, cfg.index.ann_nprobe), queries, k)


def search(cfg: PipelineConfig, query: str, *, modality: str | None = None, k: int = 10,
           encoder: str | None = None, exact: bool = False) -> SearchResult:
    """Top-k items of every (or one modality's) index for a text or file query.

    exact: never use an ANN index. Errors are one-line ConfigErrors (no index yet, an
    unknown modality or encoder, an ambiguous file type)."""
    from tasks.ann import ann_wanted

    if k < 1:
        raise ConfigError(f"--top must be >= 1, got {k}")
    indexes, missing = current_indexes(cfg)
    if not indexes:
        raise ConfigError(f"{cfg.path}: no search index for the current config yet; run `textme run {cfg.path}` "
                          f"first")
    is_file = os.path.isfile(query)
    if not is_file and (encoder is not None or _looks_like_file(query)):
        raise ConfigError(f"{query}: file not found" + (" (--encoder names the encoder of a file query)"
                                                         if encoder is not None else ""))
    if is_file:
        qenc = query_encoder(cfg, query, indexes, encoder)
        q = _file_query(cfg, query, indexes[qenc])
    else:
        qenc, q = "pivot", _text_query(cfg, query)
    searched = {e: m for e, m in indexes.items() if modality is None or m["modality"] == modality}
    if not searched:
        known = sorted({m for e in cfg.encoders if (m := encoder_modality(cfg, e))})
        raise ConfigError(f"{cfg.path}: no index of modality {modality!r} (known: {', '.join(known)})")
    q = np.asarray(q, dtype=np.float32).reshape(1, -1)
    cache = open_cache(cfg)
    hits: list[Hit] = []
    used_exact: dict[str, bool] = {}
    for e, m in searched.items():
        if m["n_items"] == 0:
            continue
        if m["dim"] != q.shape[1]:
            raise ConfigError(f"{cfg.path}: the index of {e!r} is {m['dim']}-d, the query {q.shape[1]}-d "
                              f"(a released head of another pivot?)")
        ns = cache.open_namespace(m["namespace"])
        item_keys, paths = read_index_items(m)
        use_ann = not exact and ann_wanted(cfg, len(item_keys))
        idx, scores = (_ann_top_k(cfg, m, ns, item_keys, q, k) if use_ann else _exact_top_k(ns, item_keys, q, k))
        used_exact[e] = not use_ann
        hits += [Hit(float(s), m["modality"], e, paths[i], item_keys[i]) for i, s in zip(idx[0], scores[0])]
    order = sorted(range(len(hits)), key=lambda i: -hits[i].score)  # stable: ties keep encoder, then row order
    stand_in = keys.is_stand_in(cfg, qenc) or any(keys.is_stand_in(cfg, e) for e in searched)
    return SearchResult(query, "file" if is_file else "text", qenc, [hits[i] for i in order[:k]], stand_in,
                        used_exact, missing)
