"""Demo assets: complete, idempotent, rebuilt after a crash, manifests that resolve."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from demo import assets
from demo.formats import read_record
from demo.world import MODALITIES, Scene, World


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def manifest(demo_assets: dict, name: str) -> list[dict]:
    return [json.loads(line) for line in Path(demo_assets["eval"][name]).read_text().splitlines()]


def fake_models(staging: Path) -> dict:
    """Stands in for the tiny model builders where a test only exercises the folder logic."""
    (staging / "models" / "tiny-clap").mkdir(parents=True)
    (staging / "models" / "tiny-clip").mkdir(parents=True)
    (staging / "models" / "tiny-clip" / "m.json").write_text("{}")
    return {"tiny-clip": {"model": "models/tiny-clip/m.json"}, "tiny-clap": "models/tiny-clap"}


def test_layout_and_returned_paths(demo_assets, demo_workdir):
    root = Path(demo_assets["root"])
    assert root == (demo_workdir / "demo").resolve() and assets.is_ready(demo_workdir)
    assert set(demo_assets["items"]) == set(MODALITIES)
    assert set(demo_assets["eval"]) == set(assets.MANIFESTS)
    for path in [*demo_assets["items"].values(), *demo_assets["eval"].values(),
                 demo_assets["models"]["tiny-clap"], *demo_assets["models"]["tiny-clip"].values()]:
        assert Path(path).exists(), path
        assert Path(path).is_relative_to(root)


def test_items_per_modality_are_enough_for_offsets_and_never_held_out(demo_assets, world: World):
    for modality, folder in demo_assets["items"].items():
        files = sorted(Path(folder).iterdir())
        assert len(files) >= 500
        records = [read_record(f) for f in files]
        assert {r["modality"] for r in records} == {modality}
        views = {Scene.from_dict(r["scene"]).visible(modality) for r in records}
        assert not views & {s.visible(modality) for s in world.eval_scenes}
        assert len({f.read_bytes() for f in files[:50]}) == 50  # distinct files, distinct keys


def test_manifests_follow_the_config_formats_and_resolve(demo_assets, world: World):
    eval_dir = Path(demo_assets["eval"]["image_retrieval"]).parent

    def resolve(p: str) -> Path:
        path = eval_dir / p
        assert path.is_file(), p
        return path

    n = world.n_eval
    for name, modality in (("image_retrieval", "image"), ("audio_retrieval", "audio")):
        rows = manifest(demo_assets, name)
        assert len(rows) == n
        for row, scene in zip(rows, world.eval_scenes):
            assert set(row) == {"item", "captions"} and len(row["captions"]) == 5
            assert len(set(row["captions"])) == 5
            assert read_record(resolve(row["item"]))["scene"] == scene.to_dict()
    labels = manifest(demo_assets, "point_classification")
    assert [r["label"] for r in labels] == [s.object for s in world.eval_scenes]
    assert all(read_record(resolve(r["item"]))["modality"] == "point" for r in labels)
    for name in ("audio_to_image", "image_to_point"):
        for row in manifest(demo_assets, name):
            src, dst = read_record(resolve(row["source_item"])), read_record(resolve(row["target_item"]))
            assert src["scene"] == dst["scene"] and src["modality"] != dst["modality"]


def test_mixed_search_corpus_has_graded_relevance(demo_assets):
    rows = manifest(demo_assets, "mixed_search")
    docs = {r["doc_id"]: r for r in rows if r["kind"] == "doc"}
    queries = [r for r in rows if r["kind"] == "query"]
    assert len(docs) == 200 and len(queries) == assets.N_MIXED_QUERIES
    kinds = {(d["text"] is not None, d["item"] is not None) for d in docs.values()}
    assert kinds == {(True, False), (False, True), (True, True)}
    eval_dir = Path(demo_assets["eval"]["mixed_search"]).parent
    assert all((eval_dir / d["item"]).is_file() for d in docs.values() if d["item"])
    for q in queries:
        assert set(q["relevance"]) <= set(docs)
        assert sorted(q["relevance"].values()).count(2) == 1
        assert q["query"] not in {d["text"] for d in docs.values()}


def test_second_call_is_a_no_op(demo_assets, demo_workdir):
    marker = Path(demo_assets["root"]) / assets.MARKER
    before = marker.stat().st_mtime_ns
    assert assets.prepare_demo(demo_workdir) == demo_assets
    assert marker.stat().st_mtime_ns == before


def test_crash_mid_build_leaves_nothing_trusted_and_rebuild_is_identical(
        tmp_path, monkeypatch, demo_assets):
    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(assets, "_write_eval", crash)
    with pytest.raises(RuntimeError, match="killed"):
        assets.prepare_demo(tmp_path)
    assert not assets.is_ready(tmp_path)
    assert not list(tmp_path.glob(".demo-staging-*"))
    monkeypatch.undo()

    paths = assets.prepare_demo(tmp_path)
    assert assets.is_ready(tmp_path)
    fresh, reference = tree_digest(Path(paths["root"])), tree_digest(Path(demo_assets["root"]))
    assert {k: v for k, v in fresh.items() if k.startswith(("items/", "eval/"))} == \
        {k: v for k, v in reference.items() if k.startswith(("items/", "eval/"))}
    models = [k for k in reference if k.startswith("models/") and "safetensors" in k]
    assert models and all(fresh[k] == reference[k] for k in models)  # seeded weights


def test_half_built_or_outdated_folder_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "_build_models", fake_models)
    root = tmp_path / "demo"
    (root / "items" / "image").mkdir(parents=True)
    (root / "items" / "image" / "junk.png").write_bytes(b"half written")
    (tmp_path / ".demo-staging-dead").mkdir()  # a crashed builder's leftovers
    assets.prepare_demo(tmp_path)
    assert not (root / "items" / "image" / "junk.png").exists()
    assert not (tmp_path / ".demo-staging-dead").exists()
    assert len(list((root / "items" / "image").iterdir())) == assets.N_ITEMS

    marker = root / assets.MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "version": "demo-assets-0"}))
    (root / "stray.txt").write_text("from the old version")
    assert not assets.is_ready(tmp_path)
    assets.prepare_demo(tmp_path)
    assert assets.is_ready(tmp_path) and not (root / "stray.txt").exists()

    marker.write_text("{truncated")
    assert not assets.is_ready(tmp_path)


def test_concurrent_callers_build_once(tmp_path, monkeypatch):
    builds = []
    real_build = assets._build

    def counting_build(root):
        builds.append(root)
        real_build(root)

    monkeypatch.setattr(assets, "_build_models", fake_models)
    monkeypatch.setattr(assets, "_build", counting_build)
    results, errors = [], []

    def call():
        try:
            results.append(assets.prepare_demo(tmp_path))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(builds) == 1
    assert results[0] == results[1] == results[2]
