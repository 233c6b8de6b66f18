"""Image-text retrieval: Flickr30k and MS-COCO in Karpathy's split files.

`dataset_flickr30k.json` / `dataset_coco.json` (Karpathy & Fei-Fei): `images[]`, each
with `filename`, an optional `filepath` (COCO: `val2014` / `train2014`), `split`
(`train`, `val`, `test`, COCO also `restval`) and `sentences[]` with `raw`. One row per
image of the split, its captions grouped: the multi-caption protocol. Karpathy's COCO
file gives a few images six or seven sentences; the standard 5k test set counts five
per image, so `captions` (default 5) keeps the first five (0 keeps all).
"""

from __future__ import annotations

import json
from pathlib import Path
from textme.data._layout import BenchmarkError, field, find_items, first_file, read_text
from textme.data.registry import Benchmark, BenchmarkData, register_benchmark

_SPLITS = ("test", "val", "train")


def _karpathy(bench: str, file_name: str, image_dirs: tuple[str, ...], root: Path, split: str,
              captions: int) -> BenchmarkData:
    if not isinstance(captions, int) or isinstance(captions, bool) or captions < 0:
        raise BenchmarkError(f"{bench}: option captions must be an int >= 0 (0: all), got {captions!r}")
    candidates = [root] if root.is_file() else [root / file_name, root / "annotations" / file_name]
    path = first_file(bench, candidates, f"Karpathy's split file {file_name}")
    base = path.parent if root.is_file() else root
    try:
        doc = json.loads(read_text(bench, path))
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{bench}: {path}: invalid JSON ({exc.msg})") from None
    images = field(bench, doc, "images", str(path), list)
    wanted = {split, "restval"} if split == "train" else {split}
    groups: list[list[str]] = []
    names: list[list[str]] = []
    for n, image in enumerate(images):
        where = f"{path} images[{n}]"
        if field(bench, image, "split", where) not in wanted:
            continue
        name = field(bench, image, "filename", where)
        sub = image.get("filepath") or ""
        sentences = field(bench, image, "sentences", where, list)
        caps = [field(bench, s, "raw", f"{where}.sentences[{j}]").strip() for j, s in enumerate(sentences)]
        if not caps:
            raise BenchmarkError(f"{bench}: {where}: field 'sentences' is empty")
        groups.append(caps[:captions] if captions else caps)
        names.append([f"{sub}/{name}" if sub else name])
    files = find_items(bench, base, image_dirs, names, "image files")
    rows = [{"item": item, "captions": caps} for item, caps in zip(files, groups)]
    return BenchmarkData(bench, "retrieval", split, rows, sources=[str(path)])


def read_flickr30k(root: Path, split: str, items_dir: Path | None, *, captions: int = 5) -> BenchmarkData:
    return _karpathy("flickr30k", "dataset_flickr30k.json", ("flickr30k-images", "images", ""), root, split,
                     captions)


def read_coco(root: Path, split: str, items_dir: Path | None, *, captions: int = 5) -> BenchmarkData:
    return _karpathy("coco", "dataset_coco.json", ("", "images"), root, split, captions)


_CAPTIONS = {"captions": "captions kept per image, first ones (default 5; 0: all)"}

register_benchmark(Benchmark(
    name="flickr30k", task="retrieval", reader=read_flickr30k, splits=_SPLITS, options=_CAPTIONS,
    description="Flickr30k text->image retrieval, Karpathy split (1k test images x 5 captions)",
    download="dataset_flickr30k.json from Karpathy's caption_datasets.zip; images flickr30k-images/",
))
register_benchmark(Benchmark(
    name="coco", task="retrieval", reader=read_coco, splits=_SPLITS, options=_CAPTIONS,
    description="MS-COCO text->image retrieval, Karpathy split (5k test images x 5 captions)",
    download="dataset_coco.json from Karpathy's caption_datasets.zip; images val2014/, train2014/",
))
