"""Build the demo's assets on first use: tiny models, modal items, evaluation manifests.

    from demo.assets import prepare_demo
    paths = prepare_demo(".textme")     # -> dict of the paths below; fast when already built

Layout under ``<workdir>/demo/``::

    models/tiny-clip/, models/tiny-clap/     tiny models of the real classes (stand-ins)
    items/<modality>/                        600 items of training scenes (for offsets)
    eval/items/<modality>/                   one item per held-out scene and modality
    eval/*.jsonl                             manifests in the formats of docs/CONFIG.md
    READY.json                               written last: the folder is complete

Items are PNG images, WAV clips and PLY point clouds that record their scene (see
``demo.formats``), so one file serves both the tiny real model and the toy encoder of its
modality. Everything is deterministic: a rebuild writes byte-identical items, so the
embedding cache keeps every vector it already has.

The build happens in a staging folder that is renamed into place only when complete;
a folder without a current ``READY.json`` (a crash, an older version) is rebuilt, never
trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from demo import formats, render
from demo.world import MODALITIES, Scene, World

# Bump when any generated file would change (items, manifests, models' options).
ASSETS_VERSION = "demo-assets-1"
MARKER = "READY.json"
N_ITEMS = 600  # per modality, for the offsets (configs/demo.yaml samples 500)
CAPTIONS_PER_EVAL_ITEM = 5  # the multi-caption retrieval protocol (as COCO's 5)
N_MIXED_QUERIES = 100
MANIFESTS = ("image_retrieval", "audio_retrieval", "point_classification",
             "audio_to_image", "image_to_point", "mixed_search")

_RENDER = {
    "image": lambda s, i, rec: formats.png_bytes(render.render_image(s, i),
                                                 {formats.METADATA_KEY: rec}),
    "audio": lambda s, i, rec: formats.wav_bytes(render.render_audio(s, i), rec),
    "point": lambda s, i, rec: formats.ply_bytes(*render.render_points(s, i),
                                                 f"{formats.METADATA_KEY} {rec}"),
}


def demo_root(workdir: str | os.PathLike) -> Path:
    return Path(workdir).expanduser().resolve() / "demo"


def is_ready(workdir: str | os.PathLike) -> bool:
    """True when ``<workdir>/demo`` was completely built by this version of the code."""
    marker = demo_root(workdir) / MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("version") == ASSETS_VERSION
    except (OSError, ValueError, AttributeError):
        return False


def prepare_demo(workdir: str | os.PathLike) -> dict[str, Any]:
    """Build the demo assets under ``<workdir>/demo`` unless already built; return their paths.

    Returns {"root", "version", "models": {"tiny-clip": {"model", "pretrained"},
    "tiny-clap": path}, "items": {modality: folder}, "eval": {manifest name: path}}.
    Idempotent, safe to call from several processes at once (one builds, the others wait).
    """
    root = demo_root(workdir)
    if not is_ready(workdir):
        root.parent.mkdir(parents=True, exist_ok=True)
        with _lock(root.parent / ".demo.lock"):
            if not is_ready(workdir):  # another process may have finished meanwhile
                _build(root)
    marker = json.loads((root / MARKER).read_text(encoding="utf-8"))
    models = marker["models"]  # paths relative to root: the folder may have moved
    return {
        "root": str(root),
        "version": ASSETS_VERSION,
        "models": {"tiny-clip": {k: str(root / v) for k, v in models["tiny-clip"].items()},
                   "tiny-clap": str(root / models["tiny-clap"])},
        "items": {m: str(root / "items" / m) for m in MODALITIES},
        "eval": {name: str(root / "eval" / f"{name}.jsonl") for name in MANIFESTS},
    }


def _build(root: Path) -> None:
    for stale in root.parent.glob(".demo-staging-*"):  # leftovers of a crashed build
        shutil.rmtree(stale, ignore_errors=True)
    staging = root.parent / f".demo-staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        world = World()
        models = _build_models(staging)
        _write_items(world, staging / "items")
        _write_eval(world, staging / "eval")
        counts = {m: len(list((staging / "items" / m).iterdir())) for m in MODALITIES}
        _write_json(staging / MARKER, {"version": ASSETS_VERSION, "world": world.params(),
                                       "item_counts": counts, "models": models})
        if root.exists():
            shutil.rmtree(root)
        os.replace(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build_models(staging: Path) -> dict[str, Any]:
    """Tiny models of the real classes (seeded: a rebuild gives the same weights), as
    paths relative to the demo root."""
    from textme.encoders import tiny

    clip = tiny.build_tiny_open_clip(staging / "models" / "tiny-clip")
    clap = tiny.build_tiny_clap(staging / "models" / "tiny-clap")
    rel = lambda p: Path(p).resolve().relative_to(staging.resolve()).as_posix()  # noqa: E731
    return {"tiny-clip": {k: rel(v) for k, v in clip.items()}, "tiny-clap": rel(clap)}


def item_name(modality: str, index: int, prefix: str = "") -> str:
    return f"{prefix}{modality}-{index:04d}{formats.SUFFIXES[modality]}"


def _write_item(folder: Path, name: str, modality: str, scene: Scene) -> str:
    item_id = folder.name + "/" + name
    record = formats.scene_record(modality, item_id, scene.to_dict())
    (folder / name).write_bytes(_RENDER[modality](scene, item_id, record))
    return name


def _write_items(world: World, out: Path) -> None:
    """N_ITEMS items per modality, of training scenes (never a held-out view)."""
    for modality in MODALITIES:
        folder = out / modality
        folder.mkdir(parents=True)
        for i, scene in enumerate(world.train_scenes(modality, N_ITEMS, stream="items")):
            _write_item(folder, item_name(modality, i), modality, scene)


def _write_eval(world: World, out: Path) -> None:
    """One item per held-out scene and modality, and the manifests over them. Item paths
    in manifests are relative to the manifest's folder."""
    scenes = world.eval_scenes
    rel: dict[str, list[str]] = {}
    for modality in MODALITIES:
        folder = out / "items" / modality
        folder.mkdir(parents=True)
        rel[modality] = [f"items/{modality}/" + _write_item(folder, item_name(modality, i, "eval-"),
                                                             modality, s)
                         for i, s in enumerate(scenes)]
    manifests = {
        "image_retrieval": _retrieval_rows(world, "image", rel["image"]),
        "audio_retrieval": _retrieval_rows(world, "audio", rel["audio"]),
        "point_classification": [{"item": p, "label": s.object}
                                 for p, s in zip(rel["point"], scenes)],
        "audio_to_image": [{"source_item": a, "target_item": i}
                           for a, i in zip(rel["audio"], rel["image"])],
        "image_to_point": [{"source_item": i, "target_item": p}
                           for i, p in zip(rel["image"], rel["point"])],
        "mixed_search": _mixed_search_rows(world, rel["image"]),
    }
    for name, rows in manifests.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows),
                                           encoding="utf-8")


def _retrieval_rows(world: World, modality: str, items: list[str]) -> list[dict]:
    return [{"item": p, "captions": world.eval_captions(s, modality, CAPTIONS_PER_EVAL_ITEM)}
            for p, s in zip(items, world.eval_scenes)]


def _mixed_search_rows(world: World, images: list[str]) -> list[dict]:
    """A GR-CLIP style corpus: each held-out scene is one document, as text only, image
    only, or both (in turn). Queries are other captions of some scenes; a document is
    relevant with grade 2 when it shows the query's scene, 1 when it shares two of the
    three things an image shows (object, colour, place)."""
    scenes = world.eval_scenes
    kinds = ("text", "item", "both")
    docs = []
    for i, (path, scene) in enumerate(zip(images, scenes)):
        kind = kinds[i % len(kinds)]
        caption = world.eval_captions(scene, "image", CAPTIONS_PER_EVAL_ITEM + 1)[-1]
        docs.append({"kind": "doc", "doc_id": f"d{i:03d}",
                     "text": caption if kind != "item" else None,
                     "item": path if kind != "text" else None})
    queries = []
    step = max(1, len(scenes) // N_MIXED_QUERIES)
    for qi in range(0, len(scenes), step)[:N_MIXED_QUERIES]:
        target = scenes[qi]
        relevance = {}
        for j, other in enumerate(scenes):
            shared = sum(a == b for a, b in zip(target.visible("image"), other.visible("image")))
            if j == qi:
                relevance[docs[j]["doc_id"]] = 2
            elif shared == 2:
                relevance[docs[j]["doc_id"]] = 1
        queries.append({"kind": "query",
                        "query": world.eval_captions(target, "image", CAPTIONS_PER_EVAL_ITEM)[0],
                        "relevance": relevance})
    return docs + queries


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (released by the OS if the holder dies); a no-op where
    fcntl does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
