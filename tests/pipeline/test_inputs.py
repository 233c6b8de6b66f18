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
    manifest.write_text(json.dumps({"item": "x.png", "captions": ["a", "b"]}) + "\n")
    data = read_eval_manifest(entry)
    assert data.items == [str(item)] and data.query_item == [0, 0] and data.captions == ["a", "b"]
