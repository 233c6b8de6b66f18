"""Parquet tables: schema checks, idempotent parts, partitions, reads (local, file://, memory://).

The tables' own manifest (checksums, unlisted and damaged parts, compaction, adoption,
concurrent writers) is tested in test_storage_table_parts.py."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from storage_helpers import fs_and_path

from storage.errors import TableSchemaError
from storage.tables import PARTITIONS, SCHEMAS, TableStore

NOW = datetime(2026, 1, 25, 10, 30, tzinfo=timezone.utc)


def caption(dataset: str, i: int, **over) -> dict:
    row = dict(
        dataset=dataset,
        caption_id=str(i),
        text=f"a photo of thing {i}",
        text_sha=f"{i:064x}",
        source="local:captions.csv",
        snapshot=None,
        ingested_at=NOW,
    )
    row.update(over)
    return row


def result(task: str, value: float, **over) -> dict:
    row = dict(
        run_id="run-1",
        task=task,
        eval_name="flickr-t2i",
        dataset="flickr",
        source_encoder="clip",
        target_encoder=None,
        variant="textme",
        metric="R@1",
        value=value,
        n_queries=100,
        stand_in=True,
        captions_fp="c" * 64,
        source_identity_fp="s" * 64,
        target_identity_fp=None,
        offset_fp="o" * 64,
        projection_fp="p" * 64,
        warm_start_from=None,
        config_fp="f" * 64,
        code_version="textme-pipeline-0.1.0",
        created_at=NOW,
    )
    row.update(over)
    return row


def test_every_table_reads_empty_with_its_schema(root):
    tables = TableStore(root)
    for name, schema in SCHEMAS.items():
        t = tables.read(name)
        assert t.num_rows == 0 and t.schema == schema


def test_results_carry_lineage_columns():
    names = SCHEMAS["results"].names
    for col in (
        "captions_fp",
        "source_identity_fp",
        "target_identity_fp",
        "offset_fp",
        "projection_fp",
        "config_fp",
        "code_version",
        "stand_in",
    ):
        assert col in names


def test_append_and_read_back_with_types(root):
    tables = TableStore(root)
    rows = [caption("coco", i) for i in range(3)]
    assert tables.append("captions", rows) == 3
    t = tables.read("captions")
    assert t.schema == SCHEMAS["captions"]
    got = sorted(t.to_pylist(), key=lambda r: r["caption_id"])
    assert got == rows


def test_partitions_are_hive_folders_and_filters_work(root):
    tables = TableStore(root)
    tables.append("captions", [caption("coco", 0), caption("nlphuji/flickr 30k", 1), caption("coco", 2)])
    folders = [f.rsplit("/", 1)[0] for f in tables.files("captions")]
    assert folders == ["captions/dataset=coco", "captions/dataset=nlphuji%2Fflickr%2030k"]
    only = tables.read("captions", filters={"dataset": "nlphuji/flickr 30k"})
    assert only.column("caption_id").to_pylist() == ["1"]
    assert tables.read("captions", filters=[("dataset", "=", "coco")]).num_rows == 2
    assert tables.read("captions", filters={"caption_id": ["0", "1"]}).num_rows == 2
    assert PARTITIONS == {"captions": "dataset", "results": "task"}


def test_part_name_makes_append_idempotent(root):
    tables = TableStore(root)
    rows = [result("retrieval", 0.5), result("zero_shot", 0.25)]
    assert tables.append("results", rows, part="fp123") == 2
    assert tables.append("results", rows, part="fp123") == 0  # a retried task: no duplicates
    assert tables.read("results").num_rows == 2
    assert tables.append("results", rows[:1], part="fp456") == 1
    assert tables.read("results", filters={"task": "retrieval"}).num_rows == 2
    with pytest.raises(ValueError, match="part name"):
        tables.append("results", rows, part="../escape")


def test_missing_extra_and_mistyped_columns_are_named(root):
    tables = TableStore(root)
    row = result("retrieval", 0.5)
    del row["config_fp"]
    with pytest.raises(TableSchemaError, match=r"table 'results' row 0: missing column 'config_fp'"):
        tables.append("results", [row])
    with pytest.raises(TableSchemaError, match=r"row 1: unknown column 'colour'"):
        tables.append("results", [result("a", 1.0), {**result("a", 1.0), "colour": "red"}])
    with pytest.raises(TableSchemaError, match=r"row 1: column 'value' expects double, got str"):
        tables.append("results", [result("a", 1.0), result("a", "high")])
    with pytest.raises(TableSchemaError, match=r"column 'n_queries' expects int64, got float"):
        tables.append("results", [result("a", 1.0, n_queries=1.5)])
    with pytest.raises(TableSchemaError, match=r"column 'stand_in' expects bool, got int"):
        tables.append("results", [result("a", 1.0, stand_in=1)])
    with pytest.raises(TableSchemaError, match=r"column 'n_queries' expects int64, got bool"):
        tables.append("results", [result("a", 1.0, n_queries=True)])
    with pytest.raises(TableSchemaError, match=r"column 'created_at' expects timestamp"):
        tables.append("results", [result("a", 1.0, created_at="2026-01-01")])
    with pytest.raises(TableSchemaError, match=r"row 0: column 'metric' is required, got None"):
        tables.append("results", [result("a", 1.0, metric=None)])
    with pytest.raises(KeyError, match="unknown table 'resluts'; known: captions"):
        tables.append("resluts", [])
    assert tables.read("results").num_rows == 0  # nothing half-written


def test_numbers_are_accepted_where_they_fit(root):
    tables = TableStore(root)
    tables.append("results", [result("a", 1, n_queries=np.int64(7)), result("a", np.float32(0.5))])
    got = sorted(tables.read("results").column("value").to_pylist())
    assert got == [0.5, 1.0]


def test_arrow_table_input_is_checked_and_cast(root):
    tables = TableStore(root)
    rows = [result("retrieval", 0.5)]
    t = pa.Table.from_pylist(rows)  # inferred types: timestamp tz, int64, ...
    t = t.set_column(t.schema.get_field_index("n_queries"), "n_queries", pa.array([100], pa.int32()))
    assert tables.append("results", t) == 1
    assert tables.read("results").column("n_queries").type == pa.int64()
    bad = t.set_column(t.schema.get_field_index("value"), "value", pa.array(["0.5"]))
    with pytest.raises(TableSchemaError, match=r"column 'value' expects double, got string"):
        tables.append("results", bad)
    with pytest.raises(TableSchemaError, match=r"missing column 'metric'"):
        tables.append("results", t.drop_columns(["metric"]))


def test_empty_rows_write_nothing(root):
    tables = TableStore(root)
    assert tables.append("runs", []) == 0
    assert tables.files("runs") == []


def test_no_temporary_files_are_left(root):
    tables = TableStore(root)
    tables.append(
        "training",
        [
            dict(
                run_id="r",
                encoder="clip",
                variant=None,
                projection_fp=None,
                epoch=e,
                loss=1.0 / (e + 1),
                lr=5e-4,
                seconds=0.1,
            )
            for e in range(3)
        ],
    )
    fs, path = fs_and_path(root, "training")
    names = sorted(p[len(path) + 1:] for p in fs.find(path))
    assert len(names) == 3, names  # the part, its manifest entry and the generation file, nothing else
    entry, generation, part = names
    assert entry.startswith("_manifest/") and entry.endswith(".json") and generation == "_manifest/_generation"
    assert part.startswith("part-") and part.endswith(".parquet")
    assert tables.read("training").column("epoch").to_pylist() == [0, 1, 2]
