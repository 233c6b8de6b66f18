"""Reading caption sources and evaluation manifests: counts, order, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.config import DatasetSpec, EvalSpec
from tasks.inputs import InputError, read_eval_manifest, sample_items
from tasks.sources import SourceError, read_captions, source_fingerprint

CAPTIONS = ["A dog  runs.", "", "a cat sits", "A dog runs.", None, "  ", "a bird\tsings"]


def spec(path: Path, **kw) -> DatasetSpec:
    return DatasetSpec(source=str(path), **kw)


def write_all_formats(tmp_path: Path) -> list[Path]:
    ids = [f"c{i}" for i in range(len(CAPTIONS))]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"caption_id": i, "caption": c}) for i, c in zip(ids, CAPTIONS)) + "\n")
    parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"caption_id": ids, "caption": CAPTIONS}), parquet)
    csv = tmp_path / "c.csv"
    csv.write_text("caption_id,caption\n" + "\n".join(f'{i},"{c or ""}"' for i, c in zip(ids, CAPTIONS)) + "\n")
    return [jsonl, parquet, csv]


def test_formats_normalise_and_count_empty_and_duplicates(tmp_path):
    for path in write_all_formats(tmp_path):
        caps = read_captions(spec(path, id_column="caption_id"), "d")
        assert caps.texts == ["A dog runs.", "a cat sits", "a bird sings"], path
        assert caps.ids == ["c0", "c2", "c6"], path
        assert (caps.n_input, caps.n_empty, caps.n_duplicate) == (7, 3, 1), path


def test_default_ids_are_row_numbers(tmp_path):
    caps = read_captions(spec(write_all_formats(tmp_path)[0]), "d")
    assert caps.ids == ["0", "2", "6"]


@pytest.mark.parametrize("fmt", [0, 1, 2])
def test_missing_column_names_file_and_columns(tmp_path, fmt):
    path = write_all_formats(tmp_path)[fmt]
    with pytest.raises(SourceError) as info:
        read_captions(spec(path, text_column="text"), "d")
    assert str(info.value) == f"{path}: no caption column 'text' (columns: caption_id, caption)"


def test_empty_column_and_missing_file(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"caption": ""}\n{"caption": null}\n')
    with pytest.raises(SourceError, match=r"e.jsonl: caption column 'caption' is empty \(only empty values in 2 rows\)"):
        read_captions(spec(path), "d")
    with pytest.raises(SourceError, match=r"absent.jsonl: caption source not found"):
        read_captions(spec(tmp_path / "absent.jsonl"), "d")
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"caption": "ok"}\n{oops\n')
    with pytest.raises(SourceError, match=r"b.jsonl line 2: invalid JSON"):
        read_captions(spec(bad), "d")


def test_source_fingerprint_is_content(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"caption": "x"}\n')
    b.write_text('{"caption": "x"}\n')
    assert source_fingerprint(spec(a)) == source_fingerprint(spec(b))
    b.write_text('{"caption": "y"}\n')
    assert source_fingerprint(spec(a)) != source_fingerprint(spec(b))


def test_sample_items_is_seeded_sorted_and_bounded(tmp_path):
    for i in range(20):
        (tmp_path / f"i{i:02d}.bin").write_bytes(bytes([i]))
    (tmp_path / ".hidden").write_bytes(b"x")
    s = sample_items(tmp_path, 5, seed=0)
    assert len(s.paths) == 5 and list(s.paths) == sorted(s.paths) and s.n_available == 20
    assert sample_items(tmp_path, 5, seed=0) == s
    assert sample_items(tmp_path, 5, seed=1).paths != s.paths
    assert len(sample_items(tmp_path, 50, seed=0).paths) == 20
    with pytest.raises(InputError, match="modal items folder not found"):
        sample_items(tmp_path / "nope", 5, 0)


def test_eval_manifest_errors_name_file_and_line(tmp_path):
    item = tmp_path / "x.png"
    item.write_bytes(b"x")
    manifest = tmp_path / "m.jsonl"
    entry = EvalSpec(name="r", task="retrieval", manifest=str(manifest), fields={})
    manifest.write_text(json.dumps({"item": "x.png", "captions": ["a", "b"]}) + "\n"
                        + json.dumps({"item": "y.png", "captions": ["c"]}) + "\n")
    with pytest.raises(InputError, match=r"m.jsonl line 2: item file not found: .*y.png"):
        read_eval_manifest(entry)
    manifest.write_text(json.dumps({"item": "x.png", "captions": ["a"]}) + "\n[1, 2]\n")
    with pytest.raises(InputError, match=r"m.jsonl line 2: expected a JSON object per line"):
        read_eval_manifest(entry)
    manifest.write_text('{"item": "x.png", "captions": ["a"]\n')
    with pytest.raises(InputError, match=r"m.jsonl line 1: invalid JSON"):
        read_eval_manifest(entry)
    manifest.write_bytes(b'{"item": "x.png", "captions": ["\xff"]}\n')
    with pytest.raises(InputError, match=r"m.jsonl: not UTF-8 text"):
        read_eval_manifest(entry)
    manifest.write_text(json.dumps({"item": "x.png", "captions": ["a", "b"]}) + "\n")
    data = read_eval_manifest(entry)
    assert data.items == [str(item)] and data.query_item == [0, 0] and data.captions == ["a", "b"]


# --------------------------------------------------------------------------- hub sources

HUB_REPO = "SoyeonHH/textme-data"
HUB_FILE = "captions/coco.parquet"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty huggingface_hub cache folder in tmp, offline.

    huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE into `constants` at import,
    so the module attributes are patched too (the environment is for tasks/sources.py,
    which reads HF_HUB_OFFLINE itself, and for anything that re-reads it)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def put_in_hub_cache(cache: Path, repo: str, filename: str, data: bytes, commit: str) -> Path:
    """Lay a file out as huggingface_hub's cache holds a downloaded dataset file:
    blobs/<sha256>, snapshots/<commit>/<filename> -> blob (relative link), refs/main."""
    import hashlib
    import os

    root = cache / f"datasets--{repo.replace('/', '--')}"
    blob = root / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    pointer = root / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return blob


def parquet_bytes(tmp_path: Path, captions: list) -> bytes:
    """A caption file in the official dataset's layout (id, caption, dataset, ...)."""
    path = tmp_path / "upload.parquet"
    n = len(captions)
    pq.write_table(pa.table({"id": [str(i) for i in range(n)], "caption": captions,
                             "dataset": ["coco"] * n, "modality": ["image"] * n}), path)
    return path.read_bytes()


def test_hub_source_is_read_from_the_hub_cache_offline(tmp_path, hub_cache):
    from storage.fingerprint import file_key
    from tasks.sources import fetch_source

    commit = "a" * 40
    blob = put_in_hub_cache(hub_cache, HUB_REPO, HUB_FILE, parquet_bytes(tmp_path, CAPTIONS), commit)
    hub = DatasetSpec(source=f"hf://{HUB_REPO}/{HUB_FILE}", id_column="id")

    path = fetch_source(hub)
    assert path.name == "coco.parquet" and path.resolve() == blob.resolve()
    caps = read_captions(hub, "coco")
    assert caps.texts == ["A dog runs.", "a cat sits", "a bird sings"] and caps.ids == ["0", "2", "6"]
    assert (caps.n_input, caps.n_empty, caps.n_duplicate) == (7, 3, 1)
    assert caps.source == hub.source
    fp = source_fingerprint(hub)
    assert fp == {"kind": "hub-cached", "repo": HUB_REPO, "path": HUB_FILE, "sha256": file_key(blob)}

    # a new commit on main with other content: another fingerprint (what refresh compares)
    put_in_hub_cache(hub_cache, HUB_REPO, HUB_FILE, parquet_bytes(tmp_path, ["a new caption"]), "b" * 40)
    assert read_captions(hub, "coco").texts == ["a new caption"]
    assert source_fingerprint(hub)["sha256"] != fp["sha256"]
    # a pinned commit is read from its snapshot, and is its own fingerprint
    pinned = DatasetSpec(source=f"hf://{HUB_REPO}/{HUB_FILE}@{commit}")
    assert read_captions(pinned, "coco").texts == caps.texts
    assert source_fingerprint(pinned) == {"kind": "hub", "repo": HUB_REPO, "path": HUB_FILE, "commit": commit}


def test_missing_hub_file_is_one_line_naming_source_and_the_way_out(tmp_path, hub_cache):
    put_in_hub_cache(hub_cache, HUB_REPO, HUB_FILE, parquet_bytes(tmp_path, CAPTIONS), "a" * 40)
    for source in (f"hf://{HUB_REPO}/captions/absent.parquet", "hf://nobody/nothing/captions/coco.parquet"):
        hub = DatasetSpec(source=source)
        for call in (lambda: read_captions(hub, "coco"), lambda: source_fingerprint(hub)):
            with pytest.raises(SourceError) as info:
                call()
            message = str(info.value)
            assert "\n" not in message
            assert message.startswith(f"{source}: cannot fetch from the Hugging Face hub (")
            assert message.endswith("download it and point `source:` at the local file")


def test_unreachable_hub_counts_as_offline_at_once(tmp_path, hub_cache, monkeypatch, caplog):
    """No HF_HUB_OFFLINE, but the hub's host does not resolve (a machine without network):
    cached sources still read, a missing one is one line saying why, and nothing retries."""
    import logging
    import socket

    from huggingface_hub import constants

    from textme.encoders import hub as hub_module

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub_module, "_host_reachable", {})
    lookups = []

    def no_dns(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    put_in_hub_cache(hub_cache, HUB_REPO, HUB_FILE, parquet_bytes(tmp_path, CAPTIONS), "a" * 40)

    with caplog.at_level(logging.WARNING):
        cached = DatasetSpec(source=f"hf://{HUB_REPO}/{HUB_FILE}", id_column="id")
        assert read_captions(cached, "coco").texts == ["A dog runs.", "a cat sits", "a bird sings"]
        assert source_fingerprint(cached)["kind"] == "hub-cached"
        missing = DatasetSpec(source=f"hf://{HUB_REPO}/captions/absent.parquet")
        with pytest.raises(SourceError, match=r"\(this machine cannot reach huggingface.co\); download it"):
            read_captions(missing, "coco")
    assert lookups == ["huggingface.co"]  # probed once, then remembered
    assert constants.HF_HUB_OFFLINE is True  # the libraries downloading through the hub skip the network
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]


# --------------------------------------------------------------------------- byte-order marks


def test_csv_and_jsonl_with_a_byte_order_mark_read_as_without(tmp_path):
    """Excel's "CSV UTF-8" and Notepad save a BOM first: it is not part of the first column's name."""
    for path in write_all_formats(tmp_path):
        if path.suffix == ".parquet":
            continue
        plain = read_captions(spec(path, id_column="caption_id"), "d")
        bom = path.with_name(f"bom{path.suffix}")
        bom.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        caps = read_captions(spec(bom, id_column="caption_id"), "d")
        assert (caps.ids, caps.texts) == (plain.ids, plain.texts), path


def test_eval_manifest_with_a_byte_order_mark(tmp_path):
    item = tmp_path / "a.png"
    item.write_bytes(b"x")
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\xef\xbb\xbf" + json.dumps({"item": "a.png", "captions": ["a dog"]}).encode() + b"\n")
    data = read_eval_manifest(EvalSpec(name="r", task="retrieval", manifest=str(manifest)))
    assert data.items == [str(item)] and data.captions == ["a dog"]


# --------------------------------------------------------------------------- duplicate ids

DUPLICATE_ROWS = [("a", "a dog runs"), ("b", "a cat sits"), ("a", "a dog sleeps"), ("c", "a bird"),
                  ("b", "a cat sits"), ("a", "a dog jumps"), ("d", "a dog runs")]


def write_duplicates(tmp_path: Path) -> Path:
    path = tmp_path / "dup.jsonl"
    path.write_text("".join(json.dumps({"caption_id": i, "caption": c}) + "\n" for i, c in DUPLICATE_ROWS))
    return path


def test_duplicate_ids_with_different_texts_are_kept_and_counted_by_default(tmp_path):
    caps = read_captions(spec(write_duplicates(tmp_path), id_column="caption_id"), "d")
    # row 4 repeats row 1's text (a text duplicate), row 6 repeats row 0's text under another id
    assert caps.ids == ["a", "b", "a", "c", "a"]
    assert caps.texts == ["a dog runs", "a cat sits", "a dog sleeps", "a bird", "a dog jumps"]
    assert caps.n_duplicate == 2 and caps.n_duplicate_ids == 1 and caps.n_duplicate_id_dropped == 0
    assert caps.duplicate_ids == {"a": [0, 2, 5]}
    assert caps.duplicate_ids_text() == "'a' (rows 0, 2, 5)"


def test_on_duplicate_id_first_keeps_each_ids_first_row(tmp_path):
    caps = read_captions(spec(write_duplicates(tmp_path), id_column="caption_id", on_duplicate_id="first"), "d")
    assert caps.ids == ["a", "b", "c"] and caps.texts == ["a dog runs", "a cat sits", "a bird"]
    assert caps.n_duplicate_ids == 1 and caps.n_duplicate_id_dropped == 2


def test_on_duplicate_id_fail_names_the_file_the_ids_and_rows(tmp_path):
    path = write_duplicates(tmp_path)
    with pytest.raises(SourceError) as info:
        read_captions(spec(path, id_column="caption_id", on_duplicate_id="fail"), "d")
    msg = str(info.value)
    assert msg.startswith(f"{path}: 1 caption id in column 'caption_id' with different texts: 'a' (rows 0, 2, 5)")
    assert "on_duplicate_id: keep" in msg and "\n" not in msg


def test_many_duplicate_ids_are_counted_and_the_first_named(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"caption_id": f"id{i % 20}", "caption": f"caption {i}"}) + "\n"
                            for i in range(60)))
    caps = read_captions(spec(path, id_column="caption_id"), "d")
    assert caps.n_duplicate_ids == 20 and len(caps.texts) == 60
    assert caps.duplicate_ids_text() == "'id0' (rows 0, 20, 40), 'id1' (rows 1, 21, 41), 'id2' (rows 2, 22, 42) and 17 more"


def test_row_number_ids_are_never_duplicates(tmp_path):
    caps = read_captions(spec(write_duplicates(tmp_path)), "d")
    assert caps.n_duplicate_ids == 0 and caps.ids == ["0", "1", "2", "3", "5"]
