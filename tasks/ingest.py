"""Stage 1, ingest: a caption source -> a normalised, de-duplicated captions snapshot.

The snapshot is written through the `captions` table with part = its fingerprint, so a
retried or repeated ingest rewrites the same part instead of adding rows. Its
fingerprint (`captions_fp`) hashes the content (caption ids and text hashes in order),
not the file: a source re-saved with the same captions keeps every downstream key.
"""

from __future__ import annotations

import threading
from typing import Any

from prefect import task

from tasks import keys
from tasks.cache_policy import checked
from tasks.common import STAGE_OPTIONS, current_run_id, logger, now, open_tables, write_manifest
from tasks.config import PipelineConfig
from tasks.sources import Captions, read_captions
from tasks.workspace import Workspace

__all__ = ["ingest", "ingest_dataset", "captions_fingerprint", "read_snapshot"]


def captions_fingerprint(caps: Captions) -> str:
    from storage.fingerprint import fingerprint

    return fingerprint(
        {"dataset": caps.dataset, "rows_sha256": caps.content_digest(), "n": len(caps.texts)},
        kind="captions",
    )


def ingest_dataset(cfg: PipelineConfig, dataset: str) -> dict[str, Any]:
    """Read one dataset's source, write its snapshot, return the manifest."""
    key = keys.ingest_key(cfg, dataset)
    spec = cfg.datasets[dataset]
    caps = read_captions(spec, dataset)
    captions_fp = captions_fingerprint(caps)
    ingested_at = now()
    rows = [
        {
            "dataset": dataset,
            "caption_id": cid,
            "text": text,
            "text_sha": sha,
            "source": spec.source,
            "snapshot": captions_fp,
            "ingested_at": ingested_at,
        }
        for cid, text, sha in zip(caps.ids, caps.texts, caps.shas)
    ]
    open_tables(cfg).append("captions", rows, part=captions_fp)
    log = logger()
    log.info(
        "ingest %s: %d captions kept of %d rows (%d empty, %d duplicate dropped) from %s",
        dataset, len(caps.texts), caps.n_input, caps.n_empty, caps.n_duplicate, spec.source,
    )
    if caps.n_duplicate_ids:
        what = (f"kept the first row of each, {caps.n_duplicate_id_dropped} rows dropped"
                if spec.on_duplicate_id == "first" else "all rows kept")
        log.warning(
            "ingest %s: %d caption ids in column %r appear with different texts (%s): %s; "
            "set datasets.%s.on_duplicate_id to keep, first or fail",
            dataset, caps.n_duplicate_ids, spec.id_column, what, caps.duplicate_ids_text(), dataset,
        )
    manifest = {
        "stage": "ingest",
        "dataset": dataset,
        "source": spec.source,
        "captions_fp": captions_fp,
        "n_captions": len(caps.texts),
        "n_input": caps.n_input,
        "n_empty": caps.n_empty,
        "n_duplicate": caps.n_duplicate,
        "n_duplicate_ids": caps.n_duplicate_ids,
        "n_duplicate_id_dropped": caps.n_duplicate_id_dropped,
    }
    return write_manifest(Workspace.of(cfg), key, manifest)


def read_snapshot(cfg: PipelineConfig, manifest: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(text_sha, text) of one ingested snapshot, ordered by text_sha.

    Sorted by key rather than kept in file order: Parquet datasets do not promise row
    order, and training (batches) and offsets (sampling) must see the same order on
    every run and machine.

    Read once per flow run and process: embed, offsets and train all ask for the same
    snapshots, so the first caller reads the table and the others (in any thread) get
    the same tuples. A snapshot is content-addressed (its fingerprint is in the key),
    so what is kept can never be stale; it is dropped when the next run starts.
    """
    memo_key = (str(Workspace.of(cfg).tables), manifest["dataset"], manifest["captions_fp"],
                int(manifest["n_captions"]))
    run_id = current_run_id()
    with _memo_guard:
        if _memo["run"] != run_id:
            _memo.update(run=run_id, entries={}, locks={})
        lock = _memo["locks"].setdefault(memo_key, threading.Lock())
    with lock:
        found = _memo["entries"].get(memo_key)
        if found is None:
            found = _read_snapshot(cfg, manifest)
            with _memo_guard:
                if _memo["run"] == run_id:
                    _memo["entries"][memo_key] = found
    return found


_memo: dict[str, Any] = {"run": None, "entries": {}, "locks": {}}
_memo_guard = threading.Lock()
_reads = 0


def snapshot_reads() -> int:
    """How many times this process has read a snapshot from the captions table."""
    return _reads


def _read_snapshot(cfg: PipelineConfig, manifest: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    global _reads
    table = open_tables(cfg).read("captions", filters={"dataset": manifest["dataset"],
                                                        "snapshot": manifest["captions_fp"]})
    _reads += 1
    if table.num_rows != manifest["n_captions"]:
        raise RuntimeError(
            f"captions snapshot {manifest['captions_fp'][:12]} of dataset {manifest['dataset']!r}: "
            f"{table.num_rows} rows in the captions table, its manifest says {manifest['n_captions']}"
        )
    table = table.sort_by("text_sha")
    return tuple(table["text_sha"].to_pylist()), tuple(table["text"].to_pylist())


@task(name="ingest", task_run_name="ingest-{dataset}", cache_policy=checked(keys.ingest_key_fn), **STAGE_OPTIONS)
def ingest(config: str, dataset: str) -> dict[str, Any]:
    """Prefect task: `config` is the resolved config snapshot path, `dataset` its name."""
    return ingest_dataset(keys.load_snapshot(config), dataset)
