"""The run report: every pipeline run writes <workdir>/reports/<run>/ (PNGs + one
self-contained HTML page), publishes it to Prefect, and `textme report` regenerates it
from the tables and the cache alone."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from tasks.config import load_config
from tasks.workspace import Workspace
from tests.pipeline.helpers import rows, run_pipeline, write_mini_config

runner = CliRunner()
EVALUATIONS = ("image_retrieval", "point_classification", "audio_to_image", "mixed_search")
ENCODERS = ("toy_image", "toy_audio", "toy_point")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


class _Page(HTMLParser):
    """Every <img> (its attributes) and every URL the page refers to."""

    def __init__(self):
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attrs)
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v]

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def expected_pngs(encoders=ENCODERS, evaluations=EVALUATIONS) -> set[str]:
    return {*(f"gap-{e}.png" for e in encoders), "training-loss.png", *(f"eval-{n}.png" for n in evaluations)}


def check_page(folder: Path) -> _Page:
    """The page shows every PNG of the folder, inline, and needs nothing outside itself."""
    page = parse(folder / "index.html")
    pngs = {p.name for p in folder.glob("*.png")}
    shown = set()
    for img in page.images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:40]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert data == (folder / img["data-file"]).read_bytes(), img["data-file"]
        assert img.get("alt")
        shown.add(img["data-file"])
    assert shown == pngs and len(page.images) == len(pngs)
    assert "script" not in page.tags and "link" not in page.tags  # no external CSS/JS
    for url in page.urls:
        assert url.startswith("data:") or (folder / url).is_file(), url  # nothing fetched from elsewhere
    return page


def figures(folder: Path) -> list[dict]:
    return json.loads((folder / "report.json").read_text())["figures"]


# --------------------------------------------------------------------------- a pipeline run's report


def test_every_run_leaves_a_report_showing_every_plot(pipeline_runs):
    ws = Workspace.of(pipeline_runs["cfg"])
    for run in ("cold", "warm", "edit"):
        folder = ws.report_dir(pipeline_runs[run])
        page = check_page(folder)
        assert {p.name for p in folder.glob("*.png")} == expected_pngs(), run
        text = " ".join(page.text)
        assert "Stand-in models." in text  # toy encoders: the page says so, as the CLI table does
        assert "R@1" in text and "textme" in text  # the results table is on the page
    kinds = [f["kind"] for f in figures(ws.report_dir(pipeline_runs["cold"]))]
    assert kinds.count("gap") == len(ENCODERS) and kinds.count("training") == 1
    assert kinds.count("evaluation") == len(EVALUATIONS)


def test_bar_charts_show_the_variants_the_rows_hold_in_order(pipeline_runs):
    folder = Workspace.of(pipeline_runs["cfg"]).report_dir(pipeline_runs["cold"])
    charts = {f["subject"]: f for f in figures(folder) if f["kind"] == "evaluation"}
    assert charts["image_retrieval"]["variants"] == ["textme", "uncentred", "native", "chance"]
    assert charts["audio_to_image"]["variants"] == ["textme", "uncentred", "chance"]  # no native for X->Y
    assert charts["mixed_search"]["variants"] == ["textme", "uncentred", "native"]


def test_gap_titles_carry_the_offsets_tables_gap_norms(pipeline_runs):
    cfg = pipeline_runs["cfg"]
    offsets = {r["offset_fp"]: r for r in rows(cfg, "offsets", pipeline_runs["cold"])}
    used = {fp for r in rows(cfg, "results", pipeline_runs["cold"]) for fp in (r["offset_fp"] or "").split(",") if fp}
    gaps = [f for f in figures(Workspace.of(cfg).report_dir(pipeline_runs["cold"])) if f["kind"] == "gap"]
    assert {f["subject"] for f in gaps} == set(ENCODERS)
    for fig in gaps:
        row = offsets[fig["offset_fp"]]
        assert row["encoder"] == fig["subject"] and fig["offset_fp"] in used
        before, centred, head, uncentred = fig["panels"]
        norm = lambda title: float(re.search(r"= (\d+\.\d{3})$", title).group(1))  # noqa: E731
        assert before.startswith("before centring") and norm(before) == pytest.approx(row["gap_norm"], abs=5e-4)
        assert fig["views"][0]["gap_norm"] == pytest.approx(row["gap_norm"], abs=1e-5)
        assert centred.startswith("after centring") and norm(centred) == 0.0
        # the method's idea: the head keeps the gap closed, the uncentred head does not
        assert head.startswith("after the head") and uncentred.startswith("uncentred head")
        assert norm(head) < norm(uncentred)


def test_an_edited_run_reports_its_new_offsets(pipeline_runs):
    cfg = pipeline_runs["cfg"]
    ws = Workspace.of(cfg)

    def gap_fp(run: str) -> str:
        return next(f["offset_fp"] for f in figures(ws.report_dir(pipeline_runs[run])) if f["subject"] == "toy_image")

    edited = {r["offset_fp"] for r in rows(cfg, "results", pipeline_runs["edit"])
              if r["eval_name"] == "image_retrieval" and r["variant"] == "textme"}
    assert gap_fp("cold") == gap_fp("warm") != gap_fp("edit")
    assert edited == {gap_fp("edit")}


def test_the_report_is_published_to_prefect_with_its_images_inline(pipeline_runs):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[pipeline_runs["edit"]]))
    with get_client(sync_client=True) as client:
        published = {a.key: a for a in client.read_artifacts(artifact_filter=run)}
    assert set(published) == {"textme-results-mini", "textme-training-mini", "textme-report-mini"}
    assert published["textme-report-mini"].type == "markdown"
    md = published["textme-report-mini"].data
    folder = Workspace.of(pipeline_runs["cfg"]).report_dir(pipeline_runs["edit"])
    inline = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert sorted(base64.b64decode(b) for b in inline) == sorted(p.read_bytes() for p in folder.glob("*.png"))
    assert "Stand-in models." in md


# --------------------------------------------------------------------------- textme report


def test_textme_report_regenerates_the_same_files_from_the_tables(pipeline_runs):
    cfg, config = pipeline_runs["cfg"], pipeline_runs["config"]
    ws = Workspace.of(cfg)
    folder = ws.report_dir(pipeline_runs["warm"])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    shutil.rmtree(folder)
    shutil.rmtree(ws.reports / ".figures")  # nothing drawn before: only tables, cache, heads
    result = invoke("report", config, "--run", pipeline_runs["warm"])
    assert result.exit_code == 0, result.output
    assert str(folder / "index.html") in result.stdout.replace("\n", "")
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(after) == set(before)
    for name in after:
        if name.endswith(".png") or name == "report.json":
            assert after[name] == before[name], name  # drawn again, byte for byte
    check_page(folder)


def test_a_report_reads_its_own_runs_results_not_every_runs(pipeline_runs, monkeypatch):
    from storage import parts
    from tasks.report.lineage import load_lineage
    from tasks.results import open_tables

    cfg, warm = pipeline_runs["cfg"], pipeline_runs["warm"]
    results_files = open_tables(cfg).files("results")
    own = [f for f in results_files if warm in f]
    assert own and len(own) < len(results_files)  # three runs wrote results
    read = []
    original = parts.check
    monkeypatch.setattr(parts, "check", lambda loc, table, entry: read.append(f"{table}/{entry.file}") or original(
        loc, table, entry))
    lineage = load_lineage(cfg, warm)
    assert {r["run_id"] for r in lineage.results} == {warm} and lineage.results
    assert sorted(f for f in read if f.startswith("results/")) == sorted(own)


def test_textme_report_defaults_to_the_latest_run_and_opens_the_page(pipeline_runs, monkeypatch):
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url, *a, **k: opened.append(url) or True)
    result = invoke("report", pipeline_runs["config"], "--open")
    assert result.exit_code == 0, result.output
    page = Workspace.of(pipeline_runs["cfg"]).report_dir(pipeline_runs["edit"]) / "index.html"
    assert opened == [page.resolve().as_uri()]


def test_textme_report_with_nothing_to_report_is_one_line_exit_2(tmp_path, assets):
    config = write_mini_config(tmp_path / "never-run", assets)
    result = invoke("report", config)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "nothing to report yet" in result.output
    result = invoke("report", config, "--run", "no-such-run")
    assert result.exit_code == 2 and "no run 'no-such-run'" in result.output
    assert not (tmp_path / "never-run" / "work" / "reports").exists()


# ---------------------------------------------- an encoder no evaluation uses; a report that cannot be written


@pytest.fixture(scope="module")
def spare_runs(prefect_api, assets, tmp_path_factory):
    """A mini config with a fourth encoder that no evaluation uses, run cold then warm."""
    config = write_mini_config(tmp_path_factory.mktemp("report") / "spare", assets, n_captions=60, epochs=2)
    data = yaml.safe_load(config.read_text())
    data["encoders"]["toy_spare"] = {"encoder": "toy", "train_on": ["scenes_image"],
                                     "options": {"modality": "image", "tower_seed": 9, "dim": 16, "gap_norm": 2.5,
                                                 "noise": 0.4}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return {"config": config, "cfg": load_config(config), "cold": run_pipeline(config), "warm": run_pipeline(config)}


def test_an_encoder_no_evaluation_uses_is_reported_in_cold_and_warm_runs(spare_runs):
    cfg = spare_runs["cfg"]
    ws = Workspace.of(cfg)
    spare = [r for r in rows(cfg, "offsets", spare_runs["cold"]) if r["encoder"] == "toy_spare"]
    assert spare and not rows(cfg, "offsets", spare_runs["warm"])  # the warm run computed nothing
    for run in ("cold", "warm"):
        folder = ws.report_dir(spare_runs[run])
        check_page(folder)
        figs = {f["subject"]: f for f in figures(folder) if f["kind"] == "gap"}
        assert figs["toy_spare"]["offset_fp"] == spare[0]["offset_fp"], run
        heads = {(h["encoder"], h["variant"]) for f in figures(folder) if f["kind"] == "training" for h in f["heads"]}
        assert {("toy_spare", "textme"), ("toy_spare", "uncentred")} <= heads
        assert json.loads((folder / "report.json").read_text())["notes"] == []


def test_a_report_that_cannot_be_written_does_not_fail_the_run(spare_runs, caplog):
    import logging

    cfg = spare_runs["cfg"]
    reports = Workspace.of(cfg).reports
    shutil.rmtree(reports)
    reports.write_text("not a folder")  # nothing can be written under it
    try:
        with caplog.at_level(logging.INFO):
            run_id = run_pipeline(spare_runs["config"])  # asserts the run completed
    finally:
        reports.unlink()
    assert rows(cfg, "results", run_id)  # the tables are the record
    said = [r for r in caplog.records if r.getMessage().startswith("report: ")]
    assert [r.levelno for r in said] == [logging.WARNING], [r.getMessage() for r in said]
    assert "not written" in said[0].getMessage() and str(reports) in said[0].getMessage()
