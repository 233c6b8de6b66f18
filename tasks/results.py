"""Stage 6, results: the one writer of `results` rows and of the DuckDB catalog.

Each run appends its evaluation rows (part = run id, so a retried write replaces its own
rows), stamped with the run id, the config fingerprint and the code version on top of
the lineage the evaluate stage recorded. The catalog is rebuilt once per run, at its
end (`record_run` with the final status, which every flow calls, failed or not), not
also here; DuckDB allows one writer, and that is the flow's own thread. The results (a
table artifact laid out like the CLI's table) and the training curves (markdown) are
also published as Prefect artifacts, which say plainly when numbers come from
stand-in models.

Also here: the `runs` table (`record_run`; one row per flow run as read, see
tasks/runs.py). Past storage.tables.AUTO_COMPACT_PARTS parts in a partition, the results
stage compacts the tables before rebuilding the catalog, so `results` does not grow a
file per run forever.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import keys
from tasks.common import current_run_id, logger, now, open_tables
from tasks.config import PipelineConfig
from tasks.failures import name_failure
from tasks.stand_in import STAND_IN_NOTE
from tasks.workspace import Workspace

__all__ = [
    "write_results",
    "store_results",
    "record_run",
    "results_grid",
    "results_table_rows",
    "training_markdown",
    "STAND_IN_NOTE",
]

_SPARK = "▁▂▃▄▅▆▇█"


def record_run(cfg: PipelineConfig, *, flow: str, status: str, config_fp: str, started: Any,
               finished: Any = None, run_id: str | None = None) -> None:
    """A `runs` row when a flow run starts (status "running", with this host and pid) and
    one when it ends (the same run's latest row is what reads show).

    At the start, runs of this host left "running" by a process that died are recorded
    as "crashed" first; a workdir whose tables predate table manifests stops the run
    with one line saying to run `textme tables adopt CONFIG`. At the end, the catalog is rebuilt, so DuckDB sees the run's
    status and every row it wrote. Parts are `<run>.started` / `<run>.finished`:
    idempotent, so a retried call never adds a row.
    """
    from tasks.runs import HOST, record_crashed

    run_id = run_id or current_run_id()
    tables = open_tables(cfg)
    if finished is None:
        legacy = tables.legacy()
        if legacy:
            from tasks.config import ConfigError

            raise ConfigError(
                f"{cfg.path}: the tables {', '.join(legacy)} in {Workspace.of(cfg).tables} were written before "
                f"tables kept a manifest of their parts, so nothing reads them; run `textme tables adopt "
                f"{cfg.path}` once, then run again")
        crashed = record_crashed(tables)
        if crashed:
            logger().warning("runs left running by a process that died, now recorded as crashed: %s",
                             ", ".join(crashed))
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
        "host": HOST,
        "pid": os.getpid(),
        "updated_at": now(),
    }
    tables.append("runs", [row], part=f"{run_id}.{'started' if finished is None else 'finished'}")
    if finished is not None:
        _rebuild_catalog(cfg, tables)


def store_results(cfg: PipelineConfig, evaluations: list[dict[str, Any]], config_fp: str) -> list[dict[str, Any]]:
    """Append this run's rows to `results` (and its head input checks to `head_checks`)
    and compact tables past the threshold; returns the results rows. The catalog shows
    them once the run's final `record_run` has rebuilt it."""
    run_id = current_run_id()
    created = now()
    rows = [
        # warm_start_from: absent from evaluations cached before it existed
        {"warm_start_from": None, **row, "run_id": run_id, "config_fp": config_fp, "code_version": keys.CODE_VERSION,
         "created_at": created}
        for manifest in evaluations
        for row in manifest["rows"]
    ]
    checks = [{**c, "run_id": run_id, "created_at": created}
              for manifest in evaluations for c in manifest.get("head_checks", [])]
    tables = open_tables(cfg)
    if rows:
        tables.append("results", rows, part=run_id)
    if checks:
        tables.append("head_checks", checks, part=run_id)
    for report in tables.compact_if_needed():
        logger().info("compacted %s", report)
    return rows


def _rebuild_catalog(cfg: PipelineConfig, tables: Any) -> None:
    """Rebuild the catalog; say which parts it left out (damaged, unlisted) in the run's log."""
    from storage.catalog import build_catalog, catalog_problems, open_read_only
    from storage.parts import summarize

    path = build_catalog(tables, Workspace.of(cfg).catalog)
    con = open_read_only(path)
    try:
        problems = catalog_problems(con)
    finally:
        con.close()
    for line in summarize(problems):
        logger().warning("%s", line)


_METRIC_FAMILIES = ("R@", "top", "median_rank", "mean_rank", "PPR(", "NDCG@", "share_")


def _metric_order(metric: str) -> tuple[int, int, str]:
    """R@1, R@5, R@10, ..., top1, top5, median_rank, mean_rank, PPR(...), NDCG@k, share_*."""
    family = next((i for i, p in enumerate(_METRIC_FAMILIES) if metric.startswith(p)), len(_METRIC_FAMILIES))
    digits = "".join(c for c in metric if c.isdigit())
    return family, int(digits) if digits else 0, metric


def results_grid(rows: list[dict[str, Any]], evaluations: Sequence[str] = ()
                 ) -> tuple[list[str], list[dict[str, Any]]]:
    """The layout of every results table (the CLI's, the Prefect artifact): one line per
    (evaluation, task, encoder, metric), one column per variant present. Evaluations in
    the order of `evaluations` (the config's; others after, by name), metrics in a fixed
    order, so the layout never depends on the order rows were read in.

    Returns (variants, lines); a line holds evaluation, task, encoder (the target; for
    emergent `source→target`), metric, a value or None per variant, and stand_in (any
    of its numbers from a stand-in model)."""
    variants = [v for v in keys.VARIANTS if any(r["variant"] == v for r in rows)]
    grouped: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        encoder = r["target_encoder"]
        if r["task"] == "emergent":  # every variant of a pair has the same source and target
            encoder = f"{r['source_encoder']}→{encoder}"
        line = grouped.setdefault((r["eval_name"], r["task"], encoder, r["metric"]), {"stand_in": False})
        line[r["variant"]] = r["value"]
        line["stand_in"] = line["stand_in"] or bool(r.get("stand_in"))
    rank = {name: i for i, name in enumerate(evaluations)}
    order = sorted(grouped, key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1], k[2], _metric_order(k[3])))
    lines = [{"evaluation": e, "task": t, "encoder": enc, "metric": m, **{v: grouped[(e, t, enc, m)].get(v)
                                                                          for v in variants},
              "stand_in": grouped[(e, t, enc, m)]["stand_in"]}
             for (e, t, enc, m) in order]
    return variants, lines


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


def results_table_rows(rows: list[dict[str, Any]], evaluations: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The results as a Prefect table artifact's rows: the CLI table's layout (numbers
    rounded as the CLI shows them; "" where a variant has no value), plus `stand_in`."""
    variants, lines = results_grid(rows, evaluations)
    return [{**{k: line[k] for k in ("evaluation", "task", "encoder", "metric")},
             **{v: ("" if line[v] is None else round(float(line[v]), 2)) for v in variants},
             "stand_in": line["stand_in"]}
            for line in lines]


def artifact_key(kind: str, name: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "run"
    return f"textme-{kind}-{slug}"


def _publish(cfg: PipelineConfig, rows: list[dict[str, Any]], heads: dict[str, Any]) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    stand_in = any(r["stand_in"] for r in rows)
    suffix = f" (stand-in models: {STAND_IN_NOTE})" if stand_in else ""
    if rows:
        create_table_artifact(table=results_table_rows(rows, [e.name for e in cfg.evaluation]),
                              key=artifact_key("results", cfg.name),
                              description=f"TextME results for {cfg.name}{suffix}")
    create_markdown_artifact(markdown=training_markdown(cfg, heads, stand_in), key=artifact_key("training", cfg.name),
                             description=f"TextME training curves for {cfg.name}{' (stand-in models)' if stand_in else ''}")


@task(name="results", cache_policy=NO_CACHE, persist_result=False, retries=2, retry_delay_seconds=[2, 10],
      on_failure=[name_failure])
def write_results(config: str, evaluations: list[dict[str, Any]], heads: dict[str, Any],
                  config_fp: str) -> dict[str, Any]:
    """Prefect task (not cached: every run records its rows): write results and publish
    the artifacts. Returns a small summary."""
    cfg = keys.load_snapshot(config)
    rows = store_results(cfg, evaluations, config_fp)
    try:
        _publish(cfg, rows, heads)
    except Exception as exc:  # artifacts are a view; the tables are the record
        logger().warning("could not publish Prefect artifacts: %s", exc)
    logger().info("results: %d rows written; catalog at %s", len(rows), Workspace.of(cfg).catalog)
    return {"n_rows": len(rows), "catalog": str(Workspace.of(cfg).catalog),
            "stand_in": any(r["stand_in"] for r in rows)}
