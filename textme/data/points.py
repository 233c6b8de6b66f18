"""3D zero-shot classification: ModelNet40 and ScanObjectNN.

Point encoders read `.npy` point clouds ([n, 3] xyz, `textme.encoders.inputs.
load_point_cloud`), so both readers write their items as `.npy` files into the folder
they are given (`items_dir`), named by content: a rerun over the same files rewrites
nothing, and changed sources get new files. xyz only: ModelNet40's normals are dropped;
colour, where an encoder wants it, is the encoder's business.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from textme.data._layout import (
    BenchmarkError,
    find_items,
    first_file,
    need_items_dir,
    read_text,
    write_npy,
)
from textme.data.registry import Benchmark, BenchmarkData, register_benchmark

#: ScanObjectNN's 15 classes, in label order (its shape_names.txt).
SCANOBJECTNN_CLASSES = ("bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table",
                        "bed", "pillow", "sink", "sofa", "toilet")

#: ScanObjectNN variants -> their test file under h5_files/.
SCANOBJECTNN_VARIANTS = {
    "obj_only": "main_split_nobg/test_objectdataset.h5",
    "obj_bg": "main_split/test_objectdataset.h5",
    "pb_t50_rs": "main_split/test_objectdataset_augmentedrot_scale75.h5",
}


def _progress(iterable, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="file", disable=None, leave=False)


def _read_points_txt(bench: str, path: Path) -> np.ndarray:
    """[n, 3] xyz from a comma-separated `x,y,z[,nx,ny,nz]` text file."""
    try:
        arr = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as exc:
        raise BenchmarkError(f"{bench}: {path}: expected comma-separated x,y,z[,nx,ny,nz] rows "
                             f"({str(exc).splitlines()[0]})") from None
    if arr.shape[0] == 0 or arr.shape[1] < 3 or not np.isfinite(arr).all():
        raise BenchmarkError(f"{bench}: {path}: expected rows of x,y,z[,nx,ny,nz], got shape {list(arr.shape)}")
    return np.ascontiguousarray(arr[:, :3])


def read_modelnet40(root: Path, split: str, items_dir: Path | None) -> BenchmarkData:
    """`modelnet40_shape_names.txt` (40 class names), `modelnet40_<split>.txt` (names
    `<class>_<nnnn>`), points in `<class>/<class>_<nnnn>.txt`; each cloud is written as
    `<items_dir>/modelnet40/<class>/<name>.npy` (rewritten when its text file is newer)."""
    bench = "modelnet40"
    out_dir = need_items_dir(bench, items_dir) / "modelnet40"
    names_path = first_file(bench, [root / "modelnet40_shape_names.txt"], "the 40 class names")
    list_path = first_file(bench, [root / f"modelnet40_{split}.txt"], f"the {split} shape list")
    classes = [c.strip() for c in read_text(bench, names_path).splitlines() if c.strip()]
    known = set(classes)
    shapes = []
    for n, line in enumerate(read_text(bench, list_path).splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        cls = name.rsplit("_", 1)[0]
        if "_" not in name or cls not in known:
            raise BenchmarkError(f"{bench}: {list_path} line {n}: {name!r} is not <class>_<nnnn> of a class in "
                                 f"{names_path.name}")
        shapes.append((cls, name))
    if not shapes:
        raise BenchmarkError(f"{bench}: {list_path}: no shapes")
    sources = find_items(bench, root, ("",), [[f"{c}/{n}.txt"] for c, n in shapes], "point cloud files")
    rows = []
    for (cls, name), src in _progress(zip(shapes, sources), len(shapes), f"{bench}: points -> .npy"):
        dst = out_dir / cls / f"{name}.npy"
        if not dst.is_file() or dst.stat().st_mtime_ns < Path(src).stat().st_mtime_ns:
            write_npy(dst, _read_points_txt(bench, Path(src)))
        rows.append({"item": str(dst), "label": cls})
    return BenchmarkData(bench, "classification", split, rows, sources=[str(names_path), str(list_path)])


def read_scanobjectnn(root: Path, split: str, items_dir: Path | None) -> BenchmarkData:
    """An h5 file with `data` [N, 2048, 3] and `label` [N] (class index into the 15
    standard names): `root` itself, or the split's variant file under `root` or
    `root/h5_files` (`obj_only`, `obj_bg`, `pb_t50_rs`; SCANOBJECTNN_VARIANTS). Each
    cloud is written as `<items_dir>/scanobjectnn/<sha256 of the h5, 16>/<index>.npy`."""
    import h5py

    bench = "scanobjectnn"
    out_root = need_items_dir(bench, items_dir)
    if root.is_file():
        path = root
    else:
        rel = SCANOBJECTNN_VARIANTS[split]
        path = first_file(bench, [root / rel, root / "h5_files" / rel], f"ScanObjectNN's {split} h5 file")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise BenchmarkError(f"{bench}: {path}: not an HDF5 file ({exc})") from None
    with h5:
        for key in ("data", "label"):
            if key not in h5:
                raise BenchmarkError(f"{bench}: {path}: no dataset {key!r} (found: {', '.join(h5.keys()) or 'none'})")
        data, labels = h5["data"], np.asarray(h5["label"]).reshape(-1)
        if data.ndim != 3 or data.shape[2] < 3 or data.shape[0] != labels.shape[0]:
            raise BenchmarkError(f"{bench}: {path}: expected data [N, points, 3] and label [N], got "
                                 f"{list(data.shape)} and {list(labels.shape)}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise BenchmarkError(f"{bench}: {path}: 'label' must hold class indices, got {labels.dtype}")
        bad = np.flatnonzero((labels < 0) | (labels >= len(SCANOBJECTNN_CLASSES)))
        if bad.size:
            i = int(bad[0])
            raise BenchmarkError(f"{bench}: {path}: label[{i}] = {int(labels[i])} is not one of the "
                                 f"{len(SCANOBJECTNN_CLASSES)} classes")
        from textme.encoders.hub import sha256_file

        out_dir = out_root / "scanobjectnn" / sha256_file(path)[:16]
        paths = [out_dir / f"{i:05d}.npy" for i in range(labels.shape[0])]
        todo = [i for i, dst in enumerate(paths) if not dst.is_file()]
        if todo:  # one read of the whole array: per-row h5 reads are slow
            points = np.asarray(data[:, :, :3], dtype=np.float32)
            for i in _progress(todo, len(todo), f"{bench}: points -> .npy"):
                write_npy(paths[i], np.ascontiguousarray(points[i]))
        rows = [{"item": str(dst), "label": SCANOBJECTNN_CLASSES[int(y)]} for dst, y in zip(paths, labels)]
    return BenchmarkData(bench, "classification", split, rows, sources=[str(path)])


register_benchmark(Benchmark(
    name="modelnet40", task="classification", reader=read_modelnet40, splits=("test", "train"),
    description="ModelNet40 zero-shot 3D classification (2468 test shapes, 40 classes)",
    download="modelnet40_normal_resampled.zip (shape names, test list, <class>/<class>_<nnnn>.txt)",
))
register_benchmark(Benchmark(
    name="scanobjectnn", task="classification", reader=read_scanobjectnn, splits=tuple(SCANOBJECTNN_VARIANTS),
    description="ScanObjectNN zero-shot 3D classification (h5: data [N, 2048, 3], label [N]; 15 classes)",
    download="hkust-vgd.github.io/scanobjectnn: h5_files.zip (main_split/, main_split_nobg/)",
))
