"""Stage 7, report: the run's plots and page, after the results stage.

Not cached (every run writes its report, even when every figure is reused) and never
fatal: the tables are the record, the report a view of them, so a failure to draw logs
one warning line and the run goes on. The plots are also published to the Prefect UI
as one markdown artifact (`textme-report-<config name>`), the PNGs inline.
"""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import keys
from tasks.common import current_run_id, logger
from tasks.report.build import INDEX_FILE, Report, write_report

__all__ = ["run_report", "publish_report"]


def publish_report(report: Report) -> None:
    """The report's plots as a Prefect markdown artifact (images as data: URIs, which
    Prefect's UI renders)."""
    from prefect.artifacts import create_markdown_artifact

    from tasks.report.page import report_markdown

    lin = report.lineage
    name = lin.snapshot.name
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "run"
    suffix = " (stand-in models)" if lin.stand_in else ""
    create_markdown_artifact(markdown=report_markdown(report, str(report.folder / INDEX_FILE)),
                             key=f"textme-report-{slug}", description=f"TextME run report for {name}{suffix}")


@task(name="report", cache_policy=NO_CACHE, persist_result=False)
def run_report(config: str) -> str | None:
    """Prefect task: write <workdir>/reports/<run>/ and publish its artifact; the path of
    index.html, or None when the report could not be written (logged as a warning)."""
    log = logger()
    started = time.perf_counter()
    try:
        report = write_report(keys.load_snapshot(config), current_run_id())
    except Exception as exc:  # a view of the tables: never fails the run
        log.warning("report: not written: %s: %s", type(exc).__name__, exc)
        return None
    if report.failures:
        log.warning("report: %d figure(s) not drawn: %s", len(report.failures), "; ".join(report.failures))
    try:
        publish_report(report)
    except Exception as exc:
        log.warning("report: could not publish the Prefect artifact: %s: %s", type(exc).__name__, exc)
    path = report.folder / INDEX_FILE
    log.info("report: %d figures in %.1f s: %s", len(report.figures), time.perf_counter() - started, path)
    return str(path)
