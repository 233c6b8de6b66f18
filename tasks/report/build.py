"""Build one run's report from the tables and the cache, and write its folder.

    <workdir>/reports/<run>/
      gap-<encoder>.png       one per encoder with offsets (tasks/report/gap.py)
      training-loss.png       every head's loss per epoch
      eval-<evaluation>.png   one per evaluation in the run's results
      index.html              self-contained page: every PNG inline, the results table
      report.json             what each PNG shows: kind, encoder/evaluation, panel titles

The folder is built under a temporary name and swapped into place, so a reader never
sees half a report, and a regenerated one replaces the old one whole. A figure that
cannot be drawn (e.g. its cache namespace was garbage-collected) is left out with a
note on the page; the rest of the report is still written. Figures already drawn for
the same inputs are reused (tasks/report/figures.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tasks.config import PipelineConfig
from tasks.report.figures import ReportFigure, run_figures
from tasks.report.lineage import RunLineage, load_lineage
from tasks.workspace import Workspace

__all__ = ["Report", "build_report", "save_report", "write_report", "REPORT_FILE", "INDEX_FILE"]

INDEX_FILE, REPORT_FILE = "index.html", "report.json"


@dataclass
class Report:
    lineage: RunLineage
    folder: Path
    figures: list[ReportFigure]
    notes: list[str]  # what the tables do not record for this run
    failures: list[str]  # figures that could not be drawn, and why


def build_report(cfg: PipelineConfig, run_id: str, *, reuse: bool = True) -> Report:
    """Every figure of `run_id`'s report, in memory (nothing written to the run's folder
    yet); `reuse=False` redraws figures already drawn for the same inputs."""
    lin = load_lineage(cfg, run_id)
    ws = Workspace.of(cfg)
    failures: list[str] = []
    figures = run_figures(lin, ws, failures, reuse=reuse)
    return Report(lin, ws.report_dir(run_id), figures, list(lin.notes), failures)


def save_report(report: Report) -> Path:
    """Write the report folder (atomically swapped into place); returns index.html."""
    from tasks.report.page import report_html

    folder = report.folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for fig in report.figures:
            (tmp / fig.file).write_bytes(fig.png)
        (tmp / INDEX_FILE).write_text(report_html(report), encoding="utf-8")
        meta = {"run_id": report.lineage.run_id, "stand_in": report.lineage.stand_in, "notes": report.notes,
                "failures": report.failures,
                "figures": [f.manifest() for f in report.figures]}
        (tmp / REPORT_FILE).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        os.chmod(tmp, 0o755)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder / INDEX_FILE


def write_report(cfg: PipelineConfig, run_id: str | None = None, *, reuse: bool = True) -> Report:
    """Build and save the report of `run_id` (default: the latest run with results)."""
    from tasks.report.lineage import latest_run_id

    report = build_report(cfg, run_id or latest_run_id(cfg), reuse=reuse)
    save_report(report)
    return report
