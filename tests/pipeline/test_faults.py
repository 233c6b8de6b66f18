"""The fault suite: what a hostile or unlucky user does to a workdir, and what the next run
of the shipped demo config makes of it. Each case ends in results identical to the clean
run's, or in a one-line refusal naming the file; never in another number with exit 0.

The clean demo pipeline runs once per module; each case restores its workdir in place
(manifests and Prefect's records hold absolute paths, so a copy elsewhere would not be
the same workdir), damages it, and runs again.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks.config import load_config
from tests.pipeline.helpers import REPO, copy_assets, rows, run_pipeline

TEXTME = str(Path(sys.executable).parent / "textme")
pytestmark = pytest.mark.slow


def results_of(cfg, run_id: str) -> dict[tuple[str, str, str], float]:
    return {(r["eval_name"], r["variant"], r["metric"]): r["value"] for r in rows(cfg, "results", run_id)}


def latest_results(cfg) -> dict[tuple[str, str, str], float]:
    """What `textme query ... FROM latest_results` reads: the catalog's view."""
    from storage.catalog import open_read_only
    from tasks.workspace import Workspace

    con = open_read_only(Workspace.of(cfg).catalog)
    try:
        got = con.execute("select eval_name, variant, metric, value from latest_results").fetchall()
    finally:
        con.close()
    return {(e, v, m): value for e, v, m, value in got}


@pytest.fixture(scope="module")
def clean(prefect_api, assets, tmp_path_factory):
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    folder = tmp_path_factory.mktemp("faults")
    work = folder / "work"
    data["workdir"] = str(work)
    for spec in data["datasets"].values():
        spec["source"] = str((REPO / "configs" / spec["source"]).resolve())
    config = folder / "demo.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    copy_assets(assets, work)
    run_id = run_pipeline(config)
    cfg = load_config(config)
    results = results_of(cfg, run_id)
    assert results
    saved = folder / "clean"
    saved.mkdir()
    for entry in work.iterdir():
        if entry.name != "demo":  # the generated assets are only read: left in place
            shutil.move(str(entry), saved / entry.name)
    return {"config": config, "cfg": cfg, "work": work, "saved": saved, "results": results}


@pytest.fixture
def demo(clean):
    """The clean workdir, restored in place."""
    for entry in clean["work"].iterdir():
        if entry.name != "demo":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for entry in clean["saved"].iterdir():
        (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, clean["work"] / entry.name)
    return clean


def rerun_gives_clean_results(demo, *, left: str | None = None) -> None:
    """Run again: exit 0 with the clean run's numbers, every stage cached afterwards,
    and `textme verify` passing (or naming only the file `left`, which no run rewrites)."""
    from tasks.status import collect_status

    cfg = demo["cfg"]
    run_id = run_pipeline(demo["config"])
    assert results_of(cfg, run_id) == demo["results"]
    assert latest_results(cfg) == demo["results"]
    summary = collect_status(cfg)["summary"]
    assert summary["stale"] == summary["missing"] == 0, summary
    if left is None:
        verify = invoke("verify", demo["config"])
        assert verify.exit_code == 0, verify.output
    else:
        lines = verify_lines(demo)
        assert len(lines) == 1 and left in lines[0], lines


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


def stage(cfg, stage: str, unit: str):
    from tasks.plan import replay

    (st,) = [s for s in replay(cfg).stages if (s.stage, s.unit) == (stage, unit)]
    return st


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def textme(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([TEXTME, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


def verify_lines(demo) -> list[str]:
    result = invoke("verify", demo["config"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("problem: ") for line in lines), result.stderr
    return lines


# --------------------------------------------------------------------------- byte flips


def test_a_flipped_byte_in_a_head_is_trained_again(demo):
    head = Path(stage(demo["cfg"], "train", "toy_image/textme").manifest["path"])
    flip_byte(head)
    assert any(str(head) in line and "sha256" in line for line in verify_lines(demo))
    rerun_gives_clean_results(demo)


def test_a_flipped_byte_in_an_offset_is_computed_again(demo):
    folder = Path(stage(demo["cfg"], "offsets", "toy_image").manifest["dir"])
    flip_byte(folder / "modal_mean.npy", at=0.9)
    flip_byte(folder / "img_embed_mean.pkl", at=0.95)
    lines = verify_lines(demo)
    assert any(str(folder / "modal_mean.npy") in line for line in lines), lines
    rerun_gives_clean_results(demo)


def test_a_flipped_byte_in_an_item_sample_or_a_manifest_is_written_again(demo):
    items = stage(demo["cfg"], "embed_items", "toy_audio/modal").manifest
    flip_byte(Path(items["items_file"]))
    manifest = Path(demo["work"]) / "manifests" / f"{stage(demo['cfg'], 'evaluate', 'image_retrieval').key}.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"value": ', '"value": 1', 1))  # a plausible-looking edit
    lines = verify_lines(demo)
    assert any(items["items_file"] in line for line in lines) and any(str(manifest) in line for line in lines)
    rerun_gives_clean_results(demo)


def test_a_flipped_byte_in_a_table_part_is_written_again(demo):
    from tasks.common import open_tables

    tables = open_tables(demo["cfg"])
    (captions,) = [e for e in tables.parts("captions") if e.folder == "dataset=scenes_image"]
    (training,) = tables.parts("training")[:1]
    flip_byte(demo["work"] / "tables" / "captions" / captions.file)
    flip_byte(demo["work"] / "tables" / "training" / training.file)
    lines = verify_lines(demo)
    assert any(captions.file in line for line in lines) and any(training.file in line for line in lines)
    rerun_gives_clean_results(demo)
    assert tables.read("captions").num_rows == 4500


def test_a_truncated_results_part_breaks_no_later_query_or_run(demo):
    from tasks.common import open_tables

    (part,) = open_tables(demo["cfg"]).parts("results")[:1]
    path = demo["work"] / "tables" / "results" / part.file
    path.write_bytes(path.read_bytes()[: part.bytes // 2])
    rerun_gives_clean_results(demo, left=part.file)  # an earlier run's rows: reported, never read


def test_a_flipped_byte_in_a_cache_segment_is_refused_then_quarantined_and_recomputed(demo, subprocess_env):
    from tasks.common import open_cache

    cfg = demo["cfg"]
    ns_id = stage(cfg, "embed", "toy_image/text").manifest["namespace"]
    segments = demo["work"] / "cache" / "namespaces" / ns_id / "segments"
    first = sorted(segments.iterdir())[0]  # the embed stage's: every training caption
    flip_byte(first / "vectors.bin")
    # The head has to be trained again, so the damaged vectors would be read: refused.
    (demo["work"] / "manifests" / f"{stage(cfg, 'train', 'toy_image/textme').key}.json").unlink()
    proc = textme(subprocess_env, "run", demo["config"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and first.name in line and "--quarantine" in line, proc.stderr
    report = open_cache(cfg).open_namespace(ns_id).verify(quarantine=True)  # the repair the line names
    assert report.quarantined == [first.name]
    rerun_gives_clean_results(demo)


# --------------------------------------------------------------------------- deleted files


def test_a_deleted_stage_manifest_is_written_again(demo):
    cfg = demo["cfg"]
    gone = [stage(cfg, "embed_items", "toy_image/modal"), stage(cfg, "evaluate", "mixed_search"),
            stage(cfg, "offsets", "toy_point")]
    for st in gone:
        (demo["work"] / "manifests" / f"{st.key}.json").unlink()
    assert {stage(cfg, st.stage, st.unit).status for st in gone} == {"missing"}
    rerun_gives_clean_results(demo)


def test_a_deleted_tables_folder_is_written_again(demo):
    from tasks.common import open_tables

    tables = open_tables(demo["cfg"])
    before = {t: tables.read(t).num_rows for t in ("captions", "offsets", "training")}
    shutil.rmtree(demo["work"] / "tables")
    rerun_gives_clean_results(demo)
    assert {t: tables.read(t).num_rows for t in before} == before


def test_a_deleted_cache_entry_is_recomputed_and_only_it(demo):
    from tasks.common import open_cache

    cfg = demo["cfg"]
    ns_id = stage(cfg, "embed", "pivot/text").manifest["namespace"]
    ns = open_cache(cfg).open_namespace(ns_id)
    count = ns.count()
    entries = demo["work"] / "cache" / "namespaces" / ns_id / "manifest"
    first = sorted(entries.iterdir())[0]
    lost = open_cache(cfg).open_namespace(ns_id).count()
    first.unlink()
    lost -= open_cache(cfg).open_namespace(ns_id).count()
    assert lost > 0
    assert any(ns_id[:16] in line for line in verify_lines(demo))
    rerun_gives_clean_results(demo)
    assert open_cache(cfg).open_namespace(ns_id).count() == count
    assert stage(cfg, "embed", "pivot/text").manifest["n_computed"] == lost


def test_quarantine_then_rerun_recomputes_the_segment(demo):
    from tasks.common import open_cache

    cfg = demo["cfg"]
    ns_id = stage(cfg, "embed_items", "toy_audio/modal").manifest["namespace"]
    ns = open_cache(cfg).open_namespace(ns_id)
    count = ns.count()
    segments = demo["work"] / "cache" / "namespaces" / ns_id / "segments"
    flip_byte(sorted(segments.iterdir())[0] / "vectors.bin", at=0.9)
    assert ns.verify(quarantine=True).quarantined
    assert open_cache(cfg).open_namespace(ns_id).count() < count
    rerun_gives_clean_results(demo)
    assert open_cache(cfg).open_namespace(ns_id).count() == count


# --------------------------------------------------------------------------- queries


def test_a_crafted_copy_to_through_textme_query_is_refused_and_changes_nothing(demo):
    target = demo["work"] / "tables" / "results" / "task=retrieval" / "part-evil.parquet"
    sql = (f"COPY (SELECT 'x' AS run_id, 'image_retrieval' AS eval_name, 'textme' AS variant, 'R@1' AS metric, "
           f"12.34 AS value) TO '{target}' (FORMAT parquet)")
    result = invoke("query", demo["config"], sql)
    assert result.exit_code == 2 and not target.exists()
    assert len(result.stderr.strip().splitlines()) == 1 and "query refused" in result.stderr
    # Written by hand instead: no table manifest lists it, so no read uses it.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.common import open_tables

    good = open_tables(demo["cfg"]).read("results", filters={"task": "retrieval"}).drop_columns(["task"])
    pq.write_table(good.set_column(good.schema.get_field_index("value"), "value",
                                   pa.array([12.34] * good.num_rows)), target)
    rerun_gives_clean_results(demo, left=str(target))
    assert 12.34 not in latest_results(demo["cfg"]).values()
