"""The report as one self-contained HTML page, and as markdown for the Prefect UI.

The page needs nothing outside itself: inline CSS, system fonts, every PNG inline as a
`data:` URI. Each <img> also names its file (`data-file`) and links to it, so the page
and the folder can be checked against each other. Prefect's UI (both its classic and
its v2 front end, checked in Chromium against Prefect 3.8.8) renders `data:` images in
markdown artifacts, so the artifact carries the same PNGs inline.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from tasks.keys import VARIANTS as VARIANT_ORDER  # not from plots: that imports matplotlib
from tasks.report.build import Report
from tasks.report.figures import ReportFigure

__all__ = ["report_html", "report_markdown", "data_uri"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1400px; padding: 0 1rem; color: #1b1b1b; line-height: 1.4; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: .9rem; } .meta code { font-size: .85rem; }
.stand-in { background: #fff4d6; border: 1px solid #e0b000; padding: .6rem .9rem; border-radius: 4px; }
.notes { background: #f3f3f3; padding: .5rem 1rem; border-radius: 4px; font-size: .9rem; }
figure { margin: 1rem 0 1.6rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
table { border-collapse: collapse; font-size: .85rem; margin: .4rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .2rem .55rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f6f6f6; } td.stand-in { background: #fffaf0; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(fig: ReportFigure) -> str:
    alt = escape(f"{fig.title}: " + "; ".join(p.replace("\n", " ") for p in fig.panels), quote=True)
    return (f'<figure><a href="{escape(fig.file, quote=True)}"><img src="{data_uri(fig.png)}" '
            f'data-file="{escape(fig.file, quote=True)}" alt="{alt}"></a>'
            f"<figcaption>{escape(fig.title)} (<code>{escape(fig.file)}</code>)</figcaption></figure>")


def _variants(rows: list[dict[str, Any]]) -> list[str]:
    seen = list(dict.fromkeys(r["variant"] for r in rows))
    return [v for v in VARIANT_ORDER if v in seen] + [v for v in seen if v not in VARIANT_ORDER]


def _results_table(rows: list[dict[str, Any]]) -> str:
    """One line per metric, one column per variant (like `textme run`'s table); a
    stand-in number carries a `*`."""
    variants = _variants(rows)
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        grouped.setdefault(r["metric"], {})[r["variant"]] = r
    head = "".join(f"<th>{escape(v)}</th>" for v in variants)
    body = []
    for metric, cells in grouped.items():
        tds = "".join(_cell(cells.get(v)) for v in variants)
        body.append(f"<tr><td>{escape(metric)}</td>{tds}</tr>")
    directions = sorted({f"{r['variant']}: {r['source_encoder']} → {r['target_encoder']}" for r in rows})
    foot = " · * from stand-in models" if any(r["stand_in"] for r in rows) else ""
    return (f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<p class=\"meta\">{escape('; '.join(directions) + foot)}</p>")


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "<td></td>"
    if row["stand_in"]:
        return f'<td class="num stand-in" title="stand-in models">{row["value"]:.2f}*</td>'
    return f'<td class="num">{row["value"]:.2f}</td>'


def _status(run: dict[str, Any]) -> str:
    status = str(run.get("status") or "unknown")
    return f"{status} (page written by the run's report stage)" if status == "running" else status


def _fmt_time(value: Any) -> str:
    return "" if value is None else str(value)[:19].replace("T", " ")


def _stand_in_note() -> str:
    from tasks.results import STAND_IN_NOTE

    return STAND_IN_NOTE


def report_html(report: Report) -> str:
    lin = report.lineage
    run = lin.run
    title = f"TextME run report: {lin.snapshot.name}"
    meta = [f"run <code>{escape(lin.run_id)}</code>", f"flow {escape(str(run.get('flow') or ''))}",
            f"status {escape(_status(run))}", f"started {_fmt_time(run.get('started_at'))}",
            f"finished {_fmt_time(run.get('finished_at'))}",
            f"config <code>{escape(str(run.get('config_fp') or '')[:16])}</code>",
            escape(str(run.get("code_version") or ""))]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{escape(title)}</h1>",
             f"<p class=\"meta\">{' · '.join(meta)}</p>"]
    if lin.stand_in:
        parts.append(f"<p class=\"stand-in\"><strong>Stand-in models.</strong> {escape(_stand_in_note())} "
                     f"Rows from stand-in models are marked in the tables and hatched in the charts.</p>")
    if report.notes or report.failures:
        parts.append("<div class=\"notes\"><strong>Not shown:</strong><ul>"
                     + "".join(f"<li>{escape(n)}</li>" for n in [*report.notes, *report.failures]) + "</ul></div>")
    kinds = {k: [f for f in report.figures if f.kind == k] for k in ("gap", "training", "evaluation")}
    parts.append("<h2>Modality gap, before and after centring</h2><p>Each encoder's text and modal embeddings "
                 "(the sample its offsets were computed on), projected on their first two principal axes: "
                 "before centring the two clouds sit apart (the gap, ‖μ_text − μ_modal‖); centring each side "
                 "with its own centroid closes it, and the head carries both into the pivot space together. "
                 "The uncentred head, trained on raw text, keeps the gap.</p>")
    parts += [_img(f) for f in kinds["gap"]] or ["<p>No offsets recorded for this run.</p>"]
    parts.append("<h2>Training</h2>")
    parts += [_img(f) for f in kinds["training"]] or ["<p>No training recorded for this run.</p>"]
    parts.append("<h2>Evaluations</h2>")
    figs = {f.subject: f for f in kinds["evaluation"]}
    by_eval: dict[str, list[dict[str, Any]]] = {}
    for r in lin.results:
        by_eval.setdefault(r["eval_name"], []).append(r)
    for name, rows in by_eval.items():
        parts.append(f"<h3>{escape(name)} <small>({escape(rows[0]['task'])}, dataset "
                     f"{escape(rows[0]['dataset'])})</small></h3>")
        if name in figs:
            parts.append(_img(figs[name]))
        parts.append(_results_table(rows))
    if not by_eval:
        parts.append("<p>No results recorded for this run.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def report_markdown(report: Report, html_path: str) -> str:
    """The plots for a Prefect markdown artifact (images inline as data: URIs)."""
    lin = report.lineage
    lines = [f"# TextME run report: {lin.snapshot.name}", ""]
    if lin.stand_in:
        lines += [f"> **Stand-in models.** {_stand_in_note()} Their bars are hatched.", ""]
    lines += [f"Run `{lin.run_id}`; the full page with the results table: `{html_path}`", ""]
    if report.notes or report.failures:
        lines += ["Not shown: " + "; ".join([*report.notes, *report.failures]), ""]
    section = {"gap": "## Modality gap, before and after centring", "training": "## Training",
               "evaluation": "## Evaluations"}
    last = None
    for fig in report.figures:
        if fig.kind != last:
            lines += [section[fig.kind], ""]
            last = fig.kind
        lines += [f"**{fig.title}** (`{fig.file}`)", "", f"![{fig.title}]({data_uri(fig.png)})", ""]
    return "\n".join(lines)
