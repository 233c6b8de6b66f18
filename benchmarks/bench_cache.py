"""Embedding cache at scale: random gets, bytes read, index memory, cold lookups, puts.

    python benchmarks/bench_cache.py                       # 100k, 1M, 3M keys x 1024 float16
    python benchmarks/bench_cache.py --quick               # 20k and 200k keys, 3M-key index sim
    python benchmarks/bench_cache.py --sizes 100000 --dim 1024 --index-sim 30000000 --dir /scratch

Per namespace size, every figure measured in this run against a baseline on the same
data, same disk, same process:

- get 100k random keys (float16 as stored, best of --repeat) against a memory-mapped
  `.npy` of the same rows fancy-indexed the same way, `np.load(mmap_mode="r")[idx]`
  (the ratio is baseline time / get time: 1.0x is as fast as mmap);
- the same get and mmap read once more with the vector files evicted from the page
  cache (`posix_fadvise` DONTNEED): what a namespace larger than memory costs;
- bytes read per get: vector and checksum bytes the cache fetched, against the payload
  (100k x dim x 2 bytes);
- index RSS after open and the first `missing()` over 10k keys, in a fresh process
  (nothing loaded, page cache warm): first the process right after the writes, which
  merges the segments that index.bin does not cover yet (and saves it), then the next;
- put (in 65536-row batches, as the embed stages do) against np.save + fsync of the
  same bytes; the profile of one put batch says where its time goes.

`--index-sim N` opens an N-key namespace with small vectors (dim 8) in a fresh process
and reports its peak RSS: the 30M-key "opens in 2 GB" check without 60 GB of vectors.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from storage.cache import SEGMENT_MAX_ROWS, EmbeddingCache, forget_open_namespaces  # noqa: E402

IDENTITY = {"model": "bench", "tower": "text"}
BATCH = SEGMENT_MAX_ROWS
GET_KEYS = 100_000
MISSING_KEYS = 10_000

#: Figures of the cache before this layout (issue 10), dim 1024 float16, for the table.
OLD = {
    100_000: ("0.54 s", "205 MB", "0.64x", "149 MB", "0.21 s"),
    1_000_000: ("4.8 s", "2.0 GB", "0.18x", "435 MB", "1.1 s"),
    3_000_000: ("9.6 s", "6.1 GB", "0.09x", "1.1 GB", "5.4 s"),
}
OLD_PUT = "0.10x"


def make_keys(start: int, stop: int, cheap: bool = False) -> list[str]:
    """Keys as the pipeline makes them (sha256 hex); `cheap` ones for the index sim."""
    if cheap:
        return [f"k{i}" for i in range(start, stop)]
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, stop)]


def block(base: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows start..stop-1: rows of a random base block, column 0 made unique per batch."""
    rows = np.arange(start, stop)
    out = base[rows % len(base)]
    out[:, 0] = (rows // len(base)).astype(np.float16) * np.float16(1 / 1024)
    return out


def write_npy_fsync(path: Path, base: np.ndarray, n: int, dim: int) -> None:
    """What np.save + fsync costs for the same bytes (written in batches: no 6 GB array)."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f2", "fortran_order": False, "shape": (n, dim)})
        for start in range(0, n, BATCH):
            f.write(block(base, start, min(n, start + BATCH)).tobytes())
        f.flush()
        os.fsync(f.fileno())


def put_all(root: Path, base: np.ndarray, n: int, dim: int, cheap: bool = False, batch: int = BATCH) -> float:
    ns = EmbeddingCache(root).namespace(IDENTITY, dim)
    total = 0.0
    for start in range(0, n, batch):
        keys, v = make_keys(start, min(n, start + batch), cheap), block(base, start, min(n, start + batch))
        t0 = time.perf_counter()
        ns.put(keys, v)
        total += time.perf_counter() - t0
    return total


def profile_put(root: Path, base: np.ndarray, dim: int) -> str:
    keys, v = make_keys(10**9, 10**9 + BATCH), block(base, 0, BATCH)
    ns = EmbeddingCache(root / "profile").namespace(IDENTITY, dim)
    prof = cProfile.Profile()
    prof.enable()
    ns.put(keys, v)
    prof.disable()
    sink = io.StringIO()
    pstats.Stats(prof, stream=sink).sort_stats("tottime").print_stats(8)
    return "\n".join(line for line in sink.getvalue().splitlines() if line.strip())


COLD = """
import json, random, sys, time, psutil

def peak_rss():  # VmHWM: this process's own peak (ru_maxrss would count the parent's at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

sys.path.insert(0, {root!r})
from storage.cache import EmbeddingCache
from benchmarks.bench_cache import IDENTITY, make_keys
ask = [k for i in random.Random(3).sample(range({n}), {m}) for k in make_keys(i, i + 1, {cheap})]
proc = psutil.Process()
rss0 = proc.memory_info().rss
t1 = time.perf_counter()
ns = EmbeddingCache({cache!r}).namespace(IDENTITY, {dim})
gone = ns.missing(ask)
t2 = time.perf_counter()
assert not gone, f"{{len(gone)}} keys reported missing"
print(json.dumps({{"missing_s": t2 - t1, "index_rss": proc.memory_info().rss - rss0, "count": ns.count(),
                   "peak_rss": peak_rss()}}))
"""


def cold_open(cache: Path, n: int, dim: int, cheap: bool = False) -> dict:
    """First missing() over 10k keys and the index's RSS, in a fresh process. The RSS
    counted is after open minus before it (the imports of numpy etc. are not index)."""
    code = COLD.format(root=str(ROOT), n=n, m=min(MISSING_KEYS, n), cheap=cheap, cache=str(cache), dim=dim)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt_bytes(b: float) -> str:
    return f"{b / 1e9:.2f} GB" if b >= 1e9 else f"{b / 1e6:.0f} MB"


def bench_size(n: int, dim: int, repeat: int, scratch: Path, base: np.ndarray, profile: bool) -> dict:
    cache, npy = scratch / f"cache{n}", scratch / f"plain{n}.npy"
    t0 = time.perf_counter()
    write_npy_fsync(npy, base, n, dim)
    t_save = time.perf_counter() - t0
    t_put = put_all(cache, base, n, dim)
    prof = profile_put(scratch, base, dim) if profile else ""

    cold = cold_open(cache, n, dim)  # the first open after the writes: merges what index.bin lacks
    again = cold_open(cache, n, dim)  # the next process: index.bin (saved by the first) covers all
    ns = EmbeddingCache(cache).namespace(IDENTITY, dim)
    rng = np.random.default_rng(1)
    idx = rng.choice(n, min(GET_KEYS, n), replace=False)
    asked = [k for i in idx.tolist() for k in make_keys(i, i + 1)]
    mm = np.load(npy, mmap_mode="r")  # for the equality check; timings map it anew each call
    got = ns.get(asked, dtype=None)
    assert got.dtype == np.float16 and np.array_equal(got, mm[idx]), "cache returned different vectors"
    read_before = ns.bytes_read
    ns.get(asked, dtype=None)
    bytes_per_get = ns.bytes_read - read_before
    best = {"mmap": float("inf"), "get": float("inf"), "get32": float("inf")}
    cases = {"mmap": lambda: np.load(npy, mmap_mode="r")[idx], "get": lambda: ns.get(asked, dtype=None), "get32": lambda: ns.get(asked)}
    for _ in range(repeat):  # every round runs every case: a noisy neighbour slows all alike
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    payload = len(idx) * dim * 2
    del ns, mm
    forget_open_namespaces()  # unmap the segments (mapped pages cannot be evicted)
    gc.collect()
    cold_mmap, cold_get = cold_reads(cache, npy, idx, asked, dim)
    return {
        "n": n, "get_s": best["get"], "get32_s": best["get32"], "mmap_s": best["mmap"],
        "cold_get_s": cold_get, "cold_mmap_s": cold_mmap,
        "bytes": bytes_per_get, "payload": payload, "index_rss": cold["index_rss"],
        "missing_s": cold["missing_s"], "missing2_s": again["missing_s"],
        "put_s": t_put, "save_s": t_save, "mb": n * dim * 2 / 1e6, "profile": prof,
    }


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (no root needed; unmapped pages only)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cold_reads(cache: Path, npy: Path, idx: np.ndarray, asked: list[str], dim: int) -> tuple[float, float]:
    """(mmap, get) seconds with the vector files evicted from the page cache first: what
    a namespace larger than memory costs. The get opens the namespace anew (segments
    unmapped); index.bin and the small files stay cached, as after any earlier run."""
    vectors = sorted(cache.rglob("vectors.bin"))
    evict([npy])
    t0 = time.perf_counter()
    np.load(npy, mmap_mode="r")[idx]
    cold_mmap = time.perf_counter() - t0
    evict(vectors)
    ns = EmbeddingCache(cache).namespace(IDENTITY, dim)
    t0 = time.perf_counter()
    ns.get(asked, dtype=None)
    cold_get = time.perf_counter() - t0
    del ns
    forget_open_namespaces()
    gc.collect()
    return cold_mmap, cold_get


def index_sim(n: int, scratch: Path) -> dict:
    dim = 8
    base = np.random.default_rng(0).standard_normal((BATCH, dim)).astype(np.float16)
    cache = scratch / f"sim{n}"
    t_put = put_all(cache, base, n, dim, cheap=True, batch=1 << 20)
    cold = cold_open(cache, n, dim, cheap=True)
    again = cold_open(cache, n, dim, cheap=True)
    shutil.rmtree(cache, ignore_errors=True)
    return {"n": n, "put_s": t_put, **cold, "missing2_s": again["missing_s"], "peak2_rss": again["peak_rss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=None, help="comma-separated key counts (default 100000,1000000,3000000)")
    ap.add_argument("--quick", action="store_true", help="small sizes: 20k and 200k keys, 3M-key index sim")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--index-sim", type=int, default=None, help="keys of the small-dim open test (default 30M)")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a new temp folder)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [20_000, 200_000] if args.quick else [100_000, 1_000_000, 3_000_000])
    sim = args.index_sim if args.index_sim is not None else (3_000_000 if args.quick else 30_000_000)

    scratch = Path(tempfile.mkdtemp(prefix="bench_cache_", dir=args.dir))
    base = np.random.default_rng(0).standard_normal((BATCH, args.dim), dtype=np.float32)
    base = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float16)
    print(f"dim {args.dim} float16, get of {GET_KEYS} random keys (best of {args.repeat}), scratch {scratch}")
    rows = []
    try:
        for i, n in enumerate(sizes):
            r = bench_size(n, args.dim, args.repeat, scratch, base, profile=i == 0)
            rows.append(r)
            shutil.rmtree(scratch / "profile", ignore_errors=True)
            if r["profile"]:
                print(f"\nprofile of one put of {BATCH} rows (top functions by own time):\n{r['profile']}")
            shutil.rmtree(scratch / f"cache{n}", ignore_errors=True)
            (scratch / f"plain{n}.npy").unlink()
        s = index_sim(sim, scratch) if sim else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print("\n| keys | get 100k keys | (float32) | mmap | get / mmap | cold: get | cold: mmap | cold: get / mmap | "
          "bytes read / payload | index RSS | B/key | first missing() cold | next process | put | np.save+fsync | "
          "put / save |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['get_s']:.3f} s | {r['get32_s']:.3f} s | {r['mmap_s']:.3f} s | "
            f"{r['mmap_s'] / r['get_s']:.2f}x | {r['cold_get_s']:.2f} s | {r['cold_mmap_s']:.2f} s | "
            f"{r['cold_mmap_s'] / r['cold_get_s']:.2f}x | {fmt_bytes(r['bytes'])} / {fmt_bytes(r['payload'])} "
            f"= {r['bytes'] / r['payload']:.2f}x | {fmt_bytes(r['index_rss'])} | {r['index_rss'] / r['n']:.0f} | "
            f"{r['missing_s']:.3f} s | {r['missing2_s']:.3f} s | {r['mb'] / r['put_s']:.0f} MB/s | {r['mb'] / r['save_s']:.0f} MB/s | "
            f"{r['save_s'] / r['put_s']:.2f}x |"
        )
    known = [r for r in rows if r["n"] in OLD and args.dim == 1024]
    if known:
        print("\nbefore (issue 10) -> now, dim 1024 float16")
        print("| keys | get 100k keys | bytes read per get | get / mmap | index RSS after open | first missing() cold |")
        print("|---|---|---|---|---|---|")
        for r in known:
            o = OLD[r["n"]]
            now = (f"{r['get_s']:.2f} s", fmt_bytes(r["bytes"]), f"{r['mmap_s'] / r['get_s']:.2f}x",
                   fmt_bytes(r["index_rss"]), f"{r['missing_s']:.2f} s")
            print(f"| {r['n']:,} | " + " | ".join(f"{a} -> {b}" for a, b in zip(o, now, strict=True)) + " |")
        print(f"put / (np.save + fsync): {OLD_PUT} -> {known[-1]['save_s'] / known[-1]['put_s']:.2f}x")
    if s:
        print(f"\nindex sim: {s['n']:,} keys (dim 8): opened and missing({MISSING_KEYS}) in {s['missing_s']:.2f} s "
              f"(next process {s['missing2_s']:.2f} s), index RSS {fmt_bytes(s['index_rss'])} "
              f"({s['index_rss'] / s['n']:.0f} B/key), process peak RSS {fmt_bytes(s['peak_rss'])} "
              f"(next process {fmt_bytes(s['peak2_rss'])}; budget 2 GB)")


if __name__ == "__main__":
    main()
