"""Stage 6, results: the one writer of `results` rows and of the DuckDB catalog.

Each run appends its evaluation rows (part = run id, so a retried write replaces its own
rows), stamped with the run id, the config fingerprint and the code version on top of
the lineage the evaluate stage recorded; then the catalog is rebuilt (DuckDB allows one
writer: this task). The results table and the training curves are also published as
Prefect artifacts, which say plainly when numbers come from stand-in models.

Also here: the `runs` table (one row per flow run; started, then replaced by the
finished row under the same part).
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import keys
from tasks.common import current_run_id, logger, now, open_tables
from tasks.config import PipelineConfig
from tasks.failures import name_failure
from tasks.workspace import Workspace

__all__ = [
    "write_results",
    "store_results",
    "record_run",
    "results_markdown",
    "training_markdown",
    "STAND_IN_NOTE",
]

STAND_IN_NOTE = (
    "Numbers marked stand-in come from stand-in models (toy or tiny encoders built "
    "locally): they show the method's mechanics, not the paper's results."
)
_SPARK = "▁▂▃▄▅▆▇█"


def record_run(cfg: PipelineConfig, *, flow: str, status: str, config_fp: str, started: Any,
               finished: Any = None, run_id: str | None = None) -> None:
    """One `runs` row when a flow run starts (status "running") and one when it ends.

    Parts are `<run>.started` / `<run>.finished`: append-only and idempotent, so a run
    killed mid-way keeps its "running" row, and its latest row is the one with
    finished_at set.
    """
    run_id = run_id or current_run_id()
    row = {
        "run_id": run_id,
        "flow": flow,
        "config_name": cfg.name,
        "config_fp": config_fp,
        "code_version": keys.CODE_VERSION,
        "started_at": started,
        "finished_at": finished,
        "status": status,
        "stand_in": any(keys.is_stand_in(cfg, e) for e in ("pivot", *cfg.encoders)),
    }
    open_tables(cfg).append("runs", [row], part=f"{run_id}.{'started' if finished is None else 'finished'}")


def store_results(cfg: PipelineConfig, evaluations: list[dict[str, Any]], config_fp: str) -> list[dict[str, Any]]:
    """Append this run's rows to `results` and rebuild the catalog; returns the rows."""
    from storage.catalog import build_catalog

    run_id = current_run_id()
    created = now()
    rows = [
        {**row, "run_id": run_id, "config_fp": config_fp, "code_version": keys.CODE_VERSION, "created_at": created}
        for manifest in evaluations
        for row in manifest["rows"]
    ]
    tables = open_tables(cfg)
    if rows:
        tables.append("results", rows, part=run_id)
    build_catalog(tables, Workspace.of(cfg).catalog)
    return rows


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def results_markdown(cfg: PipelineConfig, rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table; stand-in numbers are flagged, row by row."""
    stand_in = any(r["stand_in"] for r in rows)
    lines = [f"# TextME results: {cfg.name}", ""]
    if stand_in:
        lines += [f"> **Stand-in models.** {STAND_IN_NOTE}", ""]
    lines += ["| evaluation | task | variant | source -> target | metric | value | stand-in |",
              "|---|---|---|---|---|---:|:---:|"]
    for r in rows:
        lines.append(
            f"| {r['eval_name']} | {r['task']} | {r['variant']} | {r['source_encoder']} -> {r['target_encoder']} "
            f"| {r['metric']} | {_fmt(r['value'])} | {'yes' if r['stand_in'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _sparkline(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(_SPARK[min(len(_SPARK) - 1, int((v - lo) / span * (len(_SPARK) - 1) + 0.5))] for v in values)


def training_markdown(cfg: PipelineConfig, heads: dict[str, Any], stand_in: bool) -> str:
    """Loss curves of every trained head: a sparkline plus a few epochs' numbers."""
    lines = [f"# TextME training curves: {cfg.name}", ""]
    if stand_in:
        lines += [f"> **Stand-in models.** {STAND_IN_NOTE}", ""]
    lines += ["| encoder | variant | epochs | first loss | final loss | curve |", "|---|---|---:|---:|---:|---|"]
    for enc, h in sorted(heads.items()):
        for variant in ("textme", "uncentred"):
            m = h.get(variant)
            if not m:
                continue
            losses = [e["loss"] for e in m["history"]]
            lines.append(f"| {enc} | {variant} | {len(losses)} | {losses[0]:.4f} | {losses[-1]:.4f} "
                         f"| `{_sparkline(losses)}` |")
    return "\n".join(lines) + "\n"


def _publish(cfg: PipelineConfig, rows: list[dict[str, Any]], heads: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact

    stand_in = any(r["stand_in"] for r in rows)
    suffix = " (stand-in models)" if stand_in else ""
    slug = "".join(c if c.isalnum() else "-" for c in cfg.name.lower()).strip("-") or "run"
    create_markdown_artifact(markdown=results_markdown(cfg, rows), key=f"textme-results-{slug}",
                             description=f"TextME results for {cfg.name}{suffix}")
    create_markdown_artifact(markdown=training_markdown(cfg, heads, stand_in), key=f"textme-training-{slug}",
                             description=f"TextME training curves for {cfg.name}{suffix}")


@task(name="results", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[2, 10],
      on_failure=[name_failure])
def write_results(config: str, evaluations: list[dict[str, Any]], heads: dict[str, Any],
                  config_fp: str) -> dict[str, Any]:
    """Prefect task (not cached: every run records its rows): write results, rebuild the
    catalog, publish the artifacts. Returns a small summary."""
    cfg = keys.load_snapshot(config)
    rows = store_results(cfg, evaluations, config_fp)
    try:
        _publish(cfg, rows, heads)
    except Exception as exc:  # artifacts are a view; the tables are the record
        logger().warning("could not publish Prefect artifacts: %s", exc)
    logger().info("results: %d rows written; catalog at %s", len(rows), Workspace.of(cfg).catalog)
    return {"n_rows": len(rows), "catalog": str(Workspace.of(cfg).catalog),
            "stand_in": any(r["stand_in"] for r in rows)}
