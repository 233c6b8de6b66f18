"""`textme query` cannot write or read other files; the catalog of a copied workdir
answers the same, with `textme query` and with the duckdb shell the project installs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from storage.catalog import build_catalog
from tasks.config import load_config
from tests.pipeline.helpers import REPO

runner = CliRunner()
STORAGE_TESTS = REPO / "tests" / "storage"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below a folder: (size, mtime in ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A workdir's catalog with demo-like tables, and files outside it to aim at."""
    sys.path.insert(0, str(STORAGE_TESTS))
    try:
        from test_storage_catalog import demo_like_tables
    finally:
        sys.path.remove(str(STORAGE_TESTS))
    work = tmp_path / "work"
    tables = demo_like_tables(work / "tables")
    path = build_catalog(tables, work / "catalog.duckdb")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("a,b\n1,2\n")
    shutil.copy(next((work / "tables" / "training").glob("part-*.parquet")), outside / "other.parquet")
    return path


OUT = "{out}"
REFUSED = [
    f"copy results to '{OUT}/stolen.csv'",
    f"copy (select * from results) to '{OUT}/stolen.parquet' (format parquet)",
    f"export database '{OUT}/dump'",
    f"attach '{OUT}/new.duckdb' as other",
    "attach ':memory:' as scratch",
    "install httpfs",
    "load httpfs",
    f"select * from read_csv('{OUT}/secret.csv')",
    f"select * from read_parquet('{OUT}/other.parquet')",
    f"select * from '{OUT}/other.parquet'",
    f"select * from glob('{OUT}/*')",
    f"select * from read_text('{OUT}/secret.csv')",
    "select * from glob('tables/*/*.parquet')",  # not even the workdir's own files
    "create table leak as select 1",
    "create temp table leak as select 1",
    "insert into results select * from results",
    "update results set value = 0",
    "drop table results",
    "set enable_external_access = true",
    "reset lock_configuration",
    "pragma enable_profiling",
    "call pragma_version()",
    "checkpoint",
    f"select 1; copy results to '{OUT}/stolen.csv'",
    f"select 1; attach '{OUT}/new.duckdb'",
    "explain analyze create temp table leak as select 1",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_query_refuses_every_write_and_every_other_file(catalog, sql):
    tmp = catalog.parent.parent
    before = snapshot(tmp)
    result = invoke("query", "--catalog", catalog, sql.format(out=tmp / "outside"))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"error: query (refused|failed): ", lines[0]), result.stderr
    assert result.stdout == ""
    assert snapshot(tmp) == before  # nothing written, nothing changed


@pytest.mark.parametrize("sql", ["describe results", "show tables", "summarize training", "from runs",
                                 "with r as (select * from results) select count(*) from r",
                                 "explain select * from latest_results", "select * from meta.problems",
                                 "values (1, 2)", "pragma show_tables"])
def test_query_runs_every_kind_of_read(catalog, sql):
    result = invoke("query", "--catalog", catalog, sql)
    assert result.exit_code == 0, result.output


def readme_duckdb_command() -> str:
    """The README's duckdb shell command, exactly as written."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "duckdb -readonly" in b]
    return block


def test_the_readme_duckdb_command_works_as_written(pipeline_runs, tmp_path):
    """In a project folder after a run: `.venv/bin` as `make demo` makes it (here: this
    Python's), `.textme/` as the demo leaves it (here: the session's mini pipeline)."""
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    shutil.copytree(load_config(pipeline_runs["config"]).workdir, tmp_path / ".textme")
    command = readme_duckdb_command()
    assert command.startswith(".venv/bin/duckdb -readonly .textme/catalog.duckdb")
    proc = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "image_retrieval" in proc.stdout and "R@1" in proc.stdout and "textme" in proc.stdout


def test_a_copied_workdir_answers_the_same_query(pipeline_runs, tmp_path):
    config = Path(pipeline_runs["config"])
    sql = ("select eval_name, variant, metric, round(value, 2) as value from latest_results "
           "order by all")
    here = invoke("query", config, sql)
    assert here.exit_code == 0 and "image_retrieval" in here.stdout
    moved = tmp_path / "somewhere" / "else"
    shutil.copytree(config.parent, moved)  # config, data and workdir: a copied project
    copied = invoke("query", moved / config.name, sql)
    assert copied.exit_code == 0 and copied.stdout == here.stdout
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    shell = [str(Path(sys.executable).parent / "duckdb"), "-readonly", "-csv", "-c", sql]
    original = subprocess.run(shell[:2] + [str(Path(load_config(config).workdir) / "catalog.duckdb")] + shell[2:],
                              cwd=cwd, capture_output=True, text=True, timeout=120)
    from_copy = subprocess.run(shell[:2] + [os.path.relpath(moved / "work" / "catalog.duckdb", cwd)] + shell[2:],
                               cwd=cwd, capture_output=True, text=True, timeout=120)
    assert original.returncode == 0 and from_copy.returncode == 0, from_copy.stderr
    assert from_copy.stdout == original.stdout and "image_retrieval" in from_copy.stdout


def test_tables_compact_and_adopt_commands(mini_config, prefect_api):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from storage.tables import TableStore
    from tasks.workspace import Workspace

    sys.path.insert(0, str(STORAGE_TESTS))
    try:
        from test_storage_table_parts import append_run, backdate
    finally:
        sys.path.remove(str(STORAGE_TESTS))
    ws = Workspace.of(load_config(mini_config))
    tables = TableStore(ws.tables)
    for i in range(24):
        append_run(tables, i)
    rows_before = tables.read("results").num_rows
    done = invoke("tables", "compact", mini_config)
    assert done.exit_code == 0, done.output
    assert "table results: 96 -> 4 parts, 192 -> 192 rows" in done.stdout and ws.catalog.is_file()
    assert tables.read("results").num_rows == rows_before
    # a part from before table manifests: left out until adopted
    legacy = ws.tables / "training" / "part-legacy.parquet"
    legacy.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([dict(run_id="r0", encoder="e", variant=None, projection_fp=None, epoch=0,
                                              loss=1.0, lr=None, seconds=None)]), legacy)
    backdate(str(ws.tables), "training/part-legacy.parquet")
    rebuilt = invoke("tables", "compact", mini_config)  # nothing to merge; the catalog is rebuilt
    assert rebuilt.exit_code == 0 and "training/part-legacy.parquet" in rebuilt.stderr
    query = invoke("query", mini_config, "select count(*) as n from training")
    assert " 0 " in query.stdout and "training/part-legacy.parquet" in query.stderr
    legacy_results = ws.tables / "offsets" / "part-old.parquet"  # a table with no manifest at all
    legacy_results.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(legacy, legacy_results)
    from flows.pipeline import pipeline
    from tasks.config import ConfigError

    state = pipeline(str(mini_config), return_state=True)  # stops at once, saying what to do
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ConfigError) and "the tables offsets, training in " in str(error)
    assert f"run `textme tables adopt {load_config(mini_config).path}` once" in str(error)
    legacy_results.unlink()
    adopted = invoke("tables", "adopt", mini_config)
    assert adopted.exit_code == 0 and "table training: adopted 1 parts" in adopted.stdout
    assert " 1 " in invoke("query", mini_config, "select count(*) as n from training").stdout
