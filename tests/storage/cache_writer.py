"""A cache writer run as a subprocess by the crash and concurrency tests.

    python cache_writer.py ROOT START STOP BATCH [--dim D] [--wait-for FILE]

Writes keys START..STOP-1 in batches the way a pipeline stage does (ask which keys are
missing, put only those), printing "ready" once the namespace is open, "put" before
each put and "done" at the end (with --wait-for, it waits for FILE to exist after "ready", so that two writers
can be started together). Key i's vector is row i of `expected_vectors`, so any process can check any key.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

IDENTITY = {"model": "writer-test", "tower": "text", "embed_code_version": "1"}
DIM = 16
N_MAX = 20_000


def key(i: int) -> str:
    return f"key-{i:06d}"


def expected_vectors(dim: int = DIM) -> np.ndarray:
    """Row i is the vector of key(i) (float32; the cache stores float16)."""
    return np.random.default_rng(1234).standard_normal((N_MAX, dim)).astype(np.float32)


def write(
    root: str, start: int, stop: int, batch: int, dim: int = DIM, announce=print, wait_for: str | None = None
) -> None:
    from storage.cache import EmbeddingCache

    ns = EmbeddingCache(root).namespace(IDENTITY, dim=dim)
    v = expected_vectors(dim)
    announce("ready")
    while wait_for and not os.path.exists(wait_for):
        time.sleep(0.005)
    for lo in range(start, stop, batch):
        keys = [key(i) for i in range(lo, min(lo + batch, stop))]
        todo = ns.missing(keys)
        if todo:
            announce("put")
            ns.put(todo, v[[int(k[4:]) for k in todo]])
    announce("done")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("start", type=int)
    ap.add_argument("stop", type=int)
    ap.add_argument("batch", type=int)
    ap.add_argument("--dim", type=int, default=DIM)
    ap.add_argument("--wait-for", default=None)
    args = ap.parse_args()
    announce = lambda s: print(s, flush=True)  # noqa: E731
    write(args.root, args.start, args.stop, args.batch, args.dim, announce, args.wait_for)


if __name__ == "__main__":
    sys.exit(main())
