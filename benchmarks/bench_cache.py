"""Embedding cache throughput against one plain .npy file of the same vectors.

    python benchmarks/bench_cache.py                 # 100k x 1024 float16, best of 3
    python benchmarks/bench_cache.py --n 20000 --repeat 5 --dir /scratch

Both sides run in the same process on the same disk, with the page cache warm (every
timing is the best of --repeat). MB/s counts the float16 payload (n x dim x 2 bytes).

Baselines:
- put  vs np.save + fsync (the cache fsyncs each segment before publishing it; a plain
  np.save without fsync is printed too).
- get  vs np.load(...).astype(float32): `get` returns float32 rows in the order asked,
  so that is the like-for-like plain read; raw np.load (float16, no conversion) is
  printed too, and on most CPUs the float16 -> float32 conversion alone costs more
  than reading the file from the page cache.
- random-order get vs np.load(...)[perm].astype(float32).

The checksum section prices the two ways of never serving damaged bytes: crc32c per
inner chunk checked on every read (what the cache does), and a sha256 pass over a
segment's files on its first read in each process (the alternative).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.cache import EmbeddingCache  # noqa: E402


def best_of_rounds(repeat: int, cases: dict) -> dict[str, float]:
    """Best time of each case over `repeat` rounds; every round runs every case once, in
    turn, so a noisy neighbour slows the cache and the baseline alike."""
    best = {name: float("inf") for name in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def make_vectors(n: int, dim: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    return keys, v.astype(np.float16)


def save_npy(path: Path, v: np.ndarray, fsync: bool) -> None:
    with open(path, "wb") as f:
        np.save(f, v)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a new temp folder)")
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench_cache_", dir=args.dir))
    try:
        run(args.n, args.dim, args.repeat, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(n: int, dim: int, repeat: int, scratch: Path) -> None:
    keys, v16 = make_vectors(n, dim)
    mb = v16.nbytes / 1e6
    perm = np.random.default_rng(1).permutation(n)
    shuffled = [keys[i] for i in perm]
    identity = {"model": "bench", "tower": "text"}
    npy = scratch / "plain.npy"
    print(f"{n} x {dim} float16 = {mb:.0f} MB, best of {repeat}, scratch {scratch}")

    # ---------------------------------------------------------------- writes
    roots = iter(range(repeat))

    def put_fresh():
        root = scratch / f"cache{next(roots)}"
        EmbeddingCache(root).namespace(identity, dim).put(keys, v16)

    w = best_of_rounds(
        repeat,
        {
            "save": lambda: save_npy(npy, v16, fsync=False),
            "save_sync": lambda: save_npy(npy, v16, fsync=True),
            "put": put_fresh,
        },
    )
    root = scratch / "cache0"
    for stale in scratch.glob("cache*"):
        if stale != root:
            shutil.rmtree(stale)

    # ---------------------------------------------------------------- reads
    ns = EmbeddingCache(root).namespace(identity, dim)
    assert np.array_equal(ns.get(keys), v16.astype(np.float32)), "cache returned different vectors"
    assert np.array_equal(ns.get(shuffled), v16[perm].astype(np.float32)), "random-order get is wrong"
    files = [p for p in root.rglob("*") if p.is_file()]

    def sha_all():
        for p in files:
            hashlib.sha256(p.read_bytes()).hexdigest()

    crc_reader, plain_reader = zarr_readers(v16, scratch)
    r = best_of_rounds(
        repeat,
        {
            "load": lambda: np.load(npy),
            "load32": lambda: np.load(npy).astype(np.float32),
            "rand32": lambda: np.load(npy)[perm].astype(np.float32),
            "get_cold": lambda: EmbeddingCache(root).namespace(identity, dim).get(keys),
            "get": lambda: ns.get(keys),
            "get_rand": lambda: ns.get(shuffled),
            "missing": lambda: ns.missing(keys),
            "sha": sha_all,
            "zarr_crc": lambda: crc_reader[:],
            "zarr_plain": lambda: plain_reader[:],
        },
    )
    t_npy_save, t_npy_save_sync, t_put = w["save"], w["save_sync"], w["put"]
    t_npy_load, t_npy_load32, t_npy_rand32 = r["load"], r["load32"], r["rand32"]
    t_get_cold, t_get, t_get_rand, t_missing = r["get_cold"], r["get"], r["get_rand"], r["missing"]
    t_sha, t_crc = r["sha"], r["zarr_crc"] - r["zarr_plain"]

    def rate(t: float) -> str:
        return f"{mb / t:8.0f} MB/s  ({t * 1000:7.1f} ms)"

    print("\nwrites")
    print(f"  np.save (no fsync)            {rate(t_npy_save)}")
    print(f"  np.save + fsync               {rate(t_npy_save_sync)}")
    print(f"  cache put                     {rate(t_put)}")
    print(f"  put / (np.save + fsync)       {t_npy_save_sync / t_put:8.2f}x")
    print(f"  put / np.save                 {t_npy_save / t_put:8.2f}x")
    print("\nreads (page cache warm)")
    print(f"  np.load float16               {rate(t_npy_load)}")
    print(f"  np.load -> float32            {rate(t_npy_load32)}")
    print(f"  np.load[perm] -> float32      {rate(t_npy_rand32)}")
    print(f"  cache get, new process-like   {rate(t_get_cold)}   (new EmbeddingCache: index built from keys files)")
    print(f"  cache get                     {rate(t_get)}")
    print(f"  cache get, random order       {rate(t_get_rand)}")
    print(f"  cache missing(all keys)       {t_missing * 1000:7.1f} ms")
    print(f"  get / (np.load -> float32)    {t_npy_load32 / t_get:8.2f}x   (target >= 0.5x)")
    print(f"  random get / plain random     {t_npy_rand32 / t_get_rand:8.2f}x")
    print(f"  new-cache get / plain         {t_npy_load32 / t_get_cold:8.2f}x")
    print(f"  get / raw np.load float16     {t_npy_load / t_get:8.2f}x   (no float32 conversion on the plain side)")
    print("\nchecksums")
    print(f"  sha256 of all segment files   {rate(t_sha)}   (verify-once-per-process would add this to a first get)")
    print(f"  crc32c inside zarr reads      {t_crc * 1000:7.1f} ms extra per full read (what get pays, every read;")
    crc_ms, plain_ms = r["zarr_crc"] * 1000, r["zarr_plain"] * 1000
    print(f"                                zarr read with crc {crc_ms:.1f} ms, without {plain_ms:.1f} ms)")


def zarr_readers(v16: np.ndarray, scratch: Path):
    """The same vectors as two zarr arrays, with and without crc32c on inner chunks."""
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec

    from storage.segments import chunk_layout

    n, dim = v16.shape
    inner, shard = chunk_layout(n, dim, "float16")
    readers = []
    for name, codecs in (("crc", [BytesCodec(), Crc32cCodec()]), ("plain", [BytesCodec()])):
        path = scratch / f"zarr_{name}"
        arr = zarr.create_array(
            zarr.storage.LocalStore(path),
            shape=v16.shape,
            dtype="float16",
            chunks=(shard, dim),
            serializer=ShardingCodec(chunk_shape=(inner, dim), codecs=codecs),
            compressors=None,
            filters=None,
            fill_value=float("nan"),
        )
        arr[:] = v16
        readers.append(zarr.open_array(zarr.storage.LocalStore(path, read_only=True), mode="r"))
    return readers


if __name__ == "__main__":
    main()
