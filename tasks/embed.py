"""Stage 2, embed: captions (or modal items) -> vectors in the embedding cache.

The cache is asked which keys it lacks; only those are encoded. The missing keys are cut
into shards (`embedding.shard_rows`, tasks/shards.py): one after another in this process,
or in parallel on Ray actors (one per GPU, or per CPU) when the run is on Ray. Each
shard is encoded in chunks, and each chunk is committed (`ns.put`) while the next one
encodes, so a killed run loses at most a chunk per shard and the re-run resumes from
there. Chunks are cut from the missing keys in request order, so an interrupted and an
uninterrupted run encode the same batches.

`embed_log` gets a row per committed chunk (vectors computed, items skipped, the device
it ran on) and one for what the cache already had, so the rows of a killed stage still
count what it committed.

Nothing but small manifests leaves this module: downstream stages read vectors back
from the cache by key.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from prefect import task

from tasks import keys
from tasks.cache_policy import checked
from tasks.bad_items import SHOWN_SKIPPED, encode_chunk, skipped_summary
from tasks.common import GPU_STAGE_OPTIONS, current_run_id, logger, now, open_cache, open_tables, write_manifest
from tasks.config import PipelineConfig
from tasks.gpu import device_of, gpu_slot
from tasks.inputs import InputError, sample_items
from tasks.integrity import checked_item_sample, sha256_file
from tasks.progress import stage_progress
from tasks.shards import LocalShards, shard_runner
from tasks.workspace import Workspace, atomic_write_text, read_json

__all__ = [
    "embed_texts",
    "embed_items",
    "embed_captions",
    "embed_item_sample",
    "fill_cache",
    "commit_chunks",
    "ChunkLog",
    "log_embedding",
    "open_namespace",
    "namespace_of",
    "read_item_sample",
    "chunk_size",
]

DEFAULT_CHUNK = 4096


def chunk_size() -> int:
    """Inputs encoded per committed chunk (TEXTME_EMBED_CHUNK; never changes outputs)."""
    value = os.environ.get("TEXTME_EMBED_CHUNK", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else DEFAULT_CHUNK


def open_namespace(cfg: PipelineConfig, encoder: str, tower: str):
    """(namespace, encoder object) for one tower of a config's encoder.

    An existing namespace is opened by id, so nothing asks the encoder for its `dim`
    (which may load the model) unless the namespace is new.
    """
    ref = keys.encoder_ref(cfg, encoder)
    enc = keys.build_encoder(ref.encoder, ref.options)
    identity = enc.identity(tower)
    cache = open_cache(cfg)
    try:
        ns = cache.open_namespace(keys.namespace_id(identity))
    except KeyError:
        ns = cache.namespace(identity, dim=enc.dim)
    return ns, enc


def namespace_of(cfg: PipelineConfig, manifest: dict[str, Any]):
    """The cache namespace an embed manifest wrote to."""
    return open_cache(cfg).open_namespace(manifest["namespace"])


def fill_cache(ns: Any, enc: Any, tower: str, keys_: Sequence[str], inputs: Sequence[str],
               label: str = "", skipped: list[Any] | None = None, log: ChunkLog | None = None,
               shards: Any = None) -> tuple[int, int]:
    """Encode the inputs whose keys `ns` lacks, committing chunk by chunk (progress is
    logged per chunk under `label`, e.g. "clip/text").

    `skipped`: None, and an input the encoder cannot decode fails the fill; a list, and
    such inputs are left out and their `BadItemError`s appended to it (tasks/bad_items.py).
    `log`: embed_log rows, one per committed chunk (and one for what was cached).
    `shards`: how the missing inputs are split and where they run (tasks/shards.py);
    None: one after another in this process. The `gpu` slot (tasks/gpu.py) is taken
    only when something is missing.
    Returns (n_requested: distinct keys asked for, n_computed: vectors newly stored).
    """
    first: dict[str, int] = {}
    for i, k in enumerate(keys_):
        first.setdefault(k, i)
    # Stages running in parallel threads often need the same vectors (two evaluations
    # sharing query texts): one fill per namespace at a time, so each is computed once.
    with _namespace_lock(ns.id):
        missing = ns.missing(list(first))
        if log is not None:  # first, and once per stage and run: a retry's rows add up to what was asked
            log.cached(len(first) - len(missing), list(first))
        if not missing:
            return len(first), 0
        runner = shards or LocalShards()
        label = label or tower
        with gpu_slot(), stage_progress(f"embed {label}", len(missing), "items",
                                        long=len(missing) > chunk_size()) as bar:
            computed, bad = runner.run(ns, enc, tower, missing, [inputs[first[k]] for k in missing],
                                       label=label, skip=skipped is not None, log=log, bar=bar)
    if bad:
        skipped.extend(bad)
    return len(first), computed


def commit_chunks(ns: Any, enc: Any, tower: str, keys_: Sequence[str], inputs: Sequence[str], *, label: str,
                  skip: bool, log: ChunkLog | None, bar: Any = None, device: str | None = None) -> tuple[int, list[Any]]:
    """Encode `inputs` (all missing from `ns`) chunk by chunk and commit each chunk.

    The next chunk encodes while the one before commits (one writer thread, one chunk
    queued at most). A chunk is counted, logged and shown as done only once committed;
    if encoding fails, the chunk already encoded still commits before the error is
    raised, and a failed commit is raised at the next chunk at the latest.
    Returns (vectors stored, BadItemErrors of skipped inputs).
    """
    device = device or device_of(enc)
    step = chunk_size()
    say = logger()  # captured here: the writer thread has no Prefect run context
    own_bar = bar is None
    if own_bar:
        bar = stage_progress(f"embed {label}", len(keys_), "items", long=len(keys_) > step)
    computed = 0
    bad_all: list[Any] = []

    def commit(chunk: Sequence[str], kept: list[str], vectors: Any, bad: list[Any], started: float) -> int:
        n = ns.put(kept, vectors) if kept else 0
        if log is not None:
            log.committed(chunk, n, time.perf_counter() - started, bad, device)
        return n

    def done(pending: Future, n_chunk: int) -> None:
        nonlocal computed
        computed += pending.result()  # a failed commit is raised here
        bar.advance(n_chunk)
        if bar.total > step:  # long encodes: one progress line per committed chunk
            elapsed = max(time.perf_counter() - bar.started, 1e-9)
            rate = bar.done / elapsed
            say.info("embed %s: %d/%d committed (%.0f items/s, ~%.0fs left)",
                     label, bar.done, bar.total, rate, (bar.total - bar.done) / rate)

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-commit") as writer:
            pending: tuple[Future, int] | None = None
            try:
                for start in range(0, len(keys_), step):
                    started = time.perf_counter()
                    chunk = list(keys_[start : start + step])
                    kept, vectors, bad = encode_chunk(enc, tower, chunk, list(inputs[start : start + step]), skip=skip)
                    bad_all.extend(bad)
                    if pending is not None:
                        done(*pending)
                    pending = (writer.submit(commit, chunk, kept, vectors, bad, started), len(chunk))
                if pending is not None:
                    last, pending = pending, None
                    done(*last)
            finally:
                if pending is not None:  # encoding failed: what was encoded still lands
                    pending[0].exception()
    finally:
        if own_bar:
            bar.close()
    return computed, bad_all


_namespace_locks: dict[str, threading.Lock] = {}
_namespace_locks_guard = threading.Lock()


def _namespace_lock(ns_id: str) -> threading.Lock:
    with _namespace_locks_guard:
        return _namespace_locks.setdefault(ns_id, threading.Lock())


@dataclass
class ChunkLog:
    """embed_log rows of one stage's fill of one namespace, written as chunks commit, so
    a killed or failed stage's committed work is counted. Picklable: a Ray actor writes
    the rows of the shards it runs (the run id is taken where the stage runs)."""

    cfg: PipelineConfig
    stage: str
    encoder: str
    tower: str
    namespace: str
    run_id: str = field(default_factory=lambda: current_run_id())

    def _part(self, what: str) -> str:
        # Named by what it counts: a retried attempt never writes a row twice.
        return f"{self.run_id}-{self.stage}-{self.namespace[:12]}-{what}"

    def committed(self, chunk: Sequence[str], n_computed: int, seconds: float, bad: Sequence[Any],
                  device: str) -> None:
        """One committed chunk: `chunk` its keys (all asked for), `bad` those skipped."""
        self._write({"n_requested": len(chunk), "n_computed": n_computed, "seconds": seconds,
                     "n_skipped": len(bad), "device": device,
                     "skipped": "\n".join(err.item for err in bad[:SHOWN_SKIPPED]) or None},
                    self._part(chunk[0][:16]))

    def cached(self, n_cached: int, requested: Sequence[str]) -> None:
        """How many of `requested` the cache had already, written before anything is
        encoded; a retried attempt (same run, stage and keys) keeps the first row, so the
        stage's rows add up to what it asked for."""
        from storage.fingerprint import fingerprint

        self._write({"n_requested": n_cached, "n_computed": 0, "seconds": 0.0},
                    self._part("cached-" + fingerprint(sorted(requested))[:16]))

    def _write(self, entry: dict[str, Any], part: str) -> None:
        log_embedding(self.cfg, self.stage, [{"encoder": self.encoder, "tower": self.tower,
                                              "namespace": self.namespace, **entry}],
                      run_id=self.run_id, part=part)


def log_embedding(cfg: PipelineConfig, key: str, entries: list[dict[str, Any]], *, run_id: str | None = None,
                  part: str | None = None) -> None:
    """embed_log rows: entries of encoder, tower, namespace, n_requested, n_computed,
    seconds (and n_skipped, skipped: items left out as undecodable, and the first of
    their paths; device: where they ran). part (default (run, stage key)): a retried
    attempt keeps the first rows written instead of adding more."""
    run_id = run_id or current_run_id()
    logged_at = now()
    rows = [
        {
            "run_id": run_id,
            "stage": key,
            "encoder": e["encoder"],
            "tower": e["tower"],
            "namespace": e["namespace"],
            "n_requested": int(e["n_requested"]),
            "n_computed": int(e["n_computed"]),
            "seconds": float(e.get("seconds", 0.0)),
            "created_at": logged_at,
            "n_skipped": int(e.get("n_skipped", 0)),
            "skipped": e.get("skipped"),
            "device": e.get("device"),
        }
        for e in entries
    ]
    if rows:
        open_tables(cfg).append("embed_log", rows, part=part or f"{run_id}-{key}")


def embed_captions(cfg: PipelineConfig, encoder: str, tower: str, captions: list[dict[str, Any]]) -> dict[str, Any]:
    """Embed every caption of the given snapshots with one tower of one encoder."""
    from tasks.ingest import read_snapshot

    key = keys.embed_texts_key(cfg, encoder, tower, captions)
    shas: list[str] = []
    texts: list[str] = []
    for manifest in captions:
        s, t = read_snapshot(cfg, manifest)
        shas.extend(s)
        texts.extend(t)
    started = time.perf_counter()
    ns, enc = open_namespace(cfg, encoder, tower)
    requested, computed = fill_cache(ns, enc, tower, shas, texts, f"{encoder}/{tower}",
                                     log=ChunkLog(cfg, key, encoder, tower, ns.id), shards=shard_runner(cfg, encoder))
    seconds = time.perf_counter() - started
    logger().info("embed %s/%s: %d texts requested, %d computed (%.1fs)", encoder, tower, requested, computed, seconds)
    manifest = {
        "stage": "embed",
        "encoder": encoder,
        "tower": tower,
        "namespace": ns.id,
        "dim": int(ns.dim),
        "captions": [c["captions_fp"] for c in captions],
        "n_requested": requested,
        "n_computed": computed,
    }
    return write_manifest(Workspace.of(cfg), key, manifest)


def embed_item_sample(cfg: PipelineConfig, encoder: str) -> dict[str, Any]:
    """Embed the sampled modal items of the encoder's offset dataset (for mu_modal)."""
    key = keys.embed_items_key(cfg, encoder)
    entry = cfg.encoders[encoder]
    spec = cfg.datasets[entry.offset_dataset]
    sample = sample_items(spec.items, cfg.offsets.n_samples, cfg.offsets.seed)
    started = time.perf_counter()
    ns, enc = open_namespace(cfg, encoder, "modal")
    bad: list[Any] | None = [] if spec.on_bad_item == "skip" else None
    requested, computed = fill_cache(ns, enc, "modal", sample.keys, sample.paths, f"{encoder}/modal", skipped=bad,
                                     log=ChunkLog(cfg, key, encoder, "modal", ns.id),
                                     shards=shard_runner(cfg, encoder))
    seconds = time.perf_counter() - started
    bad = bad or []
    skipped = {err.item for err in bad}
    logger().info("embed %s/modal: %d items requested, %d computed (%.1fs)", encoder, requested, computed, seconds)
    pairs = [(k, p) for k, p in zip(sample.keys, sample.paths) if p not in skipped]
    if bad:
        logger().warning("embed %s/modal: %d of %d items skipped, they cannot be decoded "
                         "(datasets.%s.on_bad_item: skip): %s", encoder, len(bad), len(sample.paths),
                         entry.offset_dataset, skipped_summary(bad))
        if not pairs:
            raise InputError(f"{spec.items}: none of the {len(sample.paths)} sampled items can be decoded "
                             f"({skipped_summary(bad, 1)})")
    ws = Workspace.of(cfg)
    # The sampled (key, path) list is a sidecar: offsets read it, `textme search` shows paths.
    sidecar = ws.manifests / f"{key}.items.json"
    atomic_write_text(sidecar, json.dumps([[k, p] for k, p in pairs]))
    manifest = {
        "stage": "embed_items",
        "encoder": encoder,
        "tower": "modal",
        "dataset": entry.offset_dataset,
        "namespace": ns.id,
        "dim": int(ns.dim),
        "items_fp": sample.fingerprint,
        "items_file": str(sidecar),
        "items_sha256": sha256_file(sidecar),
        "n_items": len(pairs),
        "n_available": sample.n_available,
        "n_requested": requested,
        "n_computed": computed,
        "n_skipped": len(bad),
        "skipped": [err.item for err in bad],
    }
    return write_manifest(ws, key, manifest)


def read_item_sample(manifest: dict[str, Any], cfg: PipelineConfig | None = None) -> tuple[list[str], list[str]]:
    """(keys, paths) of the items an embed_items manifest embedded, after the sample
    file's sha256 check (`cfg`: the config named in the error's repair)."""
    pairs = read_json(checked_item_sample(cfg, manifest))
    return [k for k, _ in pairs], [p for _, p in pairs]


@task(name="embed-texts", task_run_name="embed-{encoder}-{tower}", cache_policy=checked(keys.embed_texts_key_fn),
      **GPU_STAGE_OPTIONS)
def embed_texts(config: str, encoder: str, tower: str, captions: list[dict[str, Any]]) -> dict[str, Any]:
    """Prefect task: embed the captions of `captions` (ingest manifests) into the cache."""
    return embed_captions(keys.load_snapshot(config), encoder, tower, captions)


@task(name="embed-items", task_run_name="embed-{encoder}-modal", cache_policy=checked(keys.embed_items_key_fn),
      **GPU_STAGE_OPTIONS)
def embed_items(config: str, encoder: str) -> dict[str, Any]:
    """Prefect task: embed the encoder's sampled modal items into the cache."""
    return embed_item_sample(keys.load_snapshot(config), encoder)
