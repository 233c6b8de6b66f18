"""The run report: plots of one run (modality gap per encoder, training curves, variants
per evaluation) as PNGs and a self-contained HTML page under <workdir>/reports/<run>/,
and as a Prefect artifact.

    lineage.py   what a run used, from the tables alone
    gap.py       the offsets sample from the cache, and its views (before/after centring, heads)
    plots.py     the matplotlib figures
    figures.py   one run's figures, each drawn once per content
    build.py     the report folder (written atomically)
    page.py      the HTML page and the artifact's markdown
    stage.py     the Prefect task (import it from there: this package imports no Prefect)
"""

from tasks.report.build import Report, build_report, save_report, write_report
from tasks.report.lineage import NothingToReport, latest_run_id

__all__ = ["Report", "build_report", "save_report", "write_report", "NothingToReport", "latest_run_id"]
