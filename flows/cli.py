"""The `textme` command: run the pipeline, inspect it, query and search its results.

    textme run CONFIG [--runner thread|ray] [--threads N] [--ray-address URL] [--ray-num-cpus N] [--ray-num-gpus N]
    textme evaluate CONFIG [--only NAME ...]     evaluation only, with existing heads
    textme refresh CONFIG [--force]              re-run if a caption source changed (else
                                                 ends at once: no flow started)
    textme status CONFIG [--json]                cached / missing / stale per stage
    textme query CONFIG "SQL" [--limit N]        read-only SQL on the catalog
                                                 (also: "SQL" --config CONFIG | --catalog PATH)
    textme runs CONFIG [--limit N] [--json]      one line per flow run (dead ones: crashed)
    textme tables compact CONFIG [--table T]     merge the tables' part files
    textme tables adopt CONFIG                   list parts written before table manifests
    textme search CONFIG QUERY [--top K] [--modality M] [--encoder E] [--exact] [--json]
                                                 QUERY: words, or a file (image, WAV, ...)
    textme report CONFIG [--run RUN_ID] [--open]  plots + HTML page of a run, from the tables
    textme verify CONFIG                         every artifact: heads, offsets, manifests, samples,
                                                 table parts, cache segments; exit 1 on a problem
    textme cache verify CONFIG [--quarantine]      damaged segments moved aside, recomputed next run
    textme cache gc CONFIG [CONFIG ...] [--dry-run] [--grace S]   also partial segments, .tmp files
    textme config schema [--output FILE]         JSON Schema of the config (for editors)
    textme export CONFIG --out DIR [--encoder NAME ...]   trained heads + offsets, official layout
    textme manifest NAME ROOT --out FILE [--split S] [--items-dir DIR] [-o KEY=VALUE ...]
    textme manifest --list                       the benchmark readers

A bad config, a missing file or an empty caption column is one line on stderr and exit
status 2, before anything is written; a failed run exits 1.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

# Before Prefect is imported anywhere: no usage analytics from a server the CLI starts.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tasks.workspace import Workspace  # noqa: E402

app = typer.Typer(
    name="textme",
    help="TextME as a cached, resumable Prefect pipeline (arXiv 2602.03098).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cache_app = typer.Typer(help="Inspect and clean the embedding cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
config_app = typer.Typer(help="The config file's JSON Schema, for editors and validators.", no_args_is_help=True)
app.add_typer(config_app, name="config")
tables_app = typer.Typer(help="Maintain the Parquet tables (compact, adopt old parts).", no_args_is_help=True)
app.add_typer(tables_app, name="tables")

# Tables are wide; when output is not a terminal (pipes, CI logs) do not squeeze them to 80.
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)
err = Console(stderr=True)

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 1


def _fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    first = " ".join(str(message).split()) or "error"
    err.print(f"error: {first}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[BaseException], ...]:
    from tasks.validate import user_errors

    return user_errors()


def _load(config: Path, *, check_inputs: bool = False, check_options: bool = False):
    """Load (and optionally preflight, or check encoder options); user errors exit with one line."""
    from tasks.config import load_config

    try:
        cfg = load_config(config)
        if check_inputs:
            from tasks.validate import preflight

            preflight(cfg, assets_ready=False)
        elif check_options:
            from tasks.validate import check_encoder_options

            check_encoder_options(cfg)
    except _user_errors() as exc:
        _fail(str(exc))
    return cfg


def _stand_in_caption(rows: list[dict[str, Any]]) -> str | None:
    from tasks.results import STAND_IN_NOTE

    return STAND_IN_NOTE if any(r.get("stand_in") for r in rows) else None


def _results_table(rows: list[dict[str, Any]], title: str, evaluations: Sequence[str] = ()) -> Table:
    """One line per (evaluation, metric), one column per variant (tasks/results.py
    `results_grid`, the layout of the Prefect artifact too). Narrow enough for 80
    columns: no vertical rules, an evaluation's task and encoder on its second and third
    lines, labels that wrap before a number is ever cut."""
    from rich import box

    from tasks.results import results_grid

    variants, lines = results_grid(rows, evaluations)
    table = Table(title=title, caption=_stand_in_caption(rows), caption_style="bold yellow",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("evaluation", overflow="fold")
    table.add_column("metric", overflow="fold")
    cells = [[("" if line[v] is None else f"{line[v]:.2f}") for v in variants] for line in lines]
    for i, v in enumerate(variants):  # numbers never shrink: each column as wide as its widest
        width = max([len(v)] + [len(c[i]) for c in cells])
        table.add_column(v, justify="right", no_wrap=True, min_width=width)
    groups: dict[tuple, list[int]] = {}
    for i, line in enumerate(lines):
        groups.setdefault((line["evaluation"], line["task"], line["encoder"]), []).append(i)
    for (evaluation, task, encoder), members in groups.items():
        labels = [evaluation, f"[dim]{task}[/]", f"[dim]{encoder}[/]"]  # one per line of the group
        if len(members) < len(labels):
            labels[len(members) - 1:] = ["\n".join(labels[len(members) - 1:])]
        for j, i in enumerate(members):
            table.add_row(labels[j] if j < len(labels) else "", lines[i]["metric"], *cells[i],
                          end_section=j == len(members) - 1)
    return table


def _run_rows(cfg: Any, run_id: str) -> list[dict[str, Any]]:
    from tasks.common import open_tables

    try:
        table = open_tables(cfg).read_part("results", run_id)  # parts are named by run id
    except Exception:
        return []
    return [r for r in table.to_pylist() if r["run_id"] == run_id]


def _damaged_line(err: Any, config: Path) -> str:
    """A damaged cache segment, and the command that drops it (its vectors are then
    missing, and the next run recomputes them)."""
    return (f"cache segment {err.segment_id} of namespace {err.namespace} is damaged ({err.problem}); "
            f"drop it with `textme cache verify --quarantine {config}` and run again (its vectors are recomputed)")


def _failure_line(exc: Any, config: Path) -> str:
    """One line for a failed flow: the first failing stage's own error (tasks/failures.py)."""
    from storage.errors import DamagedSegmentError
    from tasks.failures import StageFailed, describe_error, root_error

    if isinstance(exc, StageFailed):
        root = root_error(exc)
        stage = exc
        while isinstance(stage.error, StageFailed):  # refresh -> pipeline
            stage = stage.error
        return stage.describe(_damaged_line(root, config) if isinstance(root, DamagedSegmentError) else None)
    if isinstance(exc, DamagedSegmentError):
        return _damaged_line(exc, config)
    return describe_error(exc)


def _foreground_settings() -> Any:
    """Prefect settings for a flow run in this terminal: no flow-run heartbeats unless
    the user set a frequency (environment, profile or prefect.toml).

    Heartbeats feed Prefect's zombie-run detection for runs that deployments start
    (workers; untouched here). In the foreground, a dead run is seen at the terminal and
    recorded as crashed in `runs`; and Prefect 3.8 stops the heartbeat thread by joining
    it after its current 1-s sleep, so a heartbeat cost every run 0-1 s at its end (about
    a tenth of a warm demo run). PREFECT_FLOWS_HEARTBEAT_FREQUENCY=180 keeps them.
    """
    from contextlib import nullcontext

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        return nullcontext()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _run_flow(flow_obj: Any, cfg: Any, config: Path, kwargs: dict[str, Any]) -> Any:
    """Run a flow; a failure prints its root cause in one line (the failing stage's task
    run name, then its error) and exits 1; a user error found inside the flow exits 2."""
    with _foreground_settings():
        state = flow_obj(**kwargs, return_state=True)
    if not state.is_completed():
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as err:  # a result that cannot be read back
            exc = err
        if not isinstance(exc, BaseException):
            _fail(f"{cfg.name}: run failed: {state.message}", EXIT_RUN_FAILED)
        if isinstance(exc, _user_errors()):
            _fail(str(exc))
        _fail(f"{cfg.name}: run failed: {_failure_line(exc, config)}", EXIT_RUN_FAILED)
    return state


@app.command()
def run(
    config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
    runner: str = typer.Option("thread", help="Task runner: thread (default) or ray."),
    threads: Optional[int] = typer.Option(None, help="Thread pool size (thread runner)."),
    ray_address: Optional[str] = typer.Option(None, help="Run on the Ray cluster at this address "
                                                         "(auto, ray://head:10001); implies --runner ray."),
    ray_num_cpus: Optional[int] = typer.Option(None, help="CPUs of a local Ray (default: all cores)."),
    ray_num_gpus: Optional[int] = typer.Option(None, help="GPUs a local Ray declares (default: those it finds; "
                                                          "logical ones on a CPU machine place work as on GPUs)."),
) -> None:
    """Run the whole pipeline (cached: a re-run only computes what changed)."""
    from flows.runners import RUNNERS, check_shared_storage, make_runner

    runner = "ray" if ray_address else runner
    if runner not in RUNNERS:
        _fail(f"--runner: unknown task runner {runner!r}; known: {', '.join(RUNNERS)}")
    if runner != "ray" and (ray_num_cpus is not None or ray_num_gpus is not None):
        _fail("--ray-num-cpus / --ray-num-gpus need --runner ray")
    cfg = _load(config, check_inputs=True)
    from flows.pipeline import pipeline

    try:
        if ray_address:
            check_shared_storage(config)
        task_runner = (make_runner("ray", workers=ray_num_cpus, address=ray_address, num_gpus=ray_num_gpus)
                       if runner == "ray" else make_runner("thread", workers=threads))
    except ValueError as err:
        _fail(str(err))
    state = _run_flow(pipeline.with_options(task_runner=task_runner), cfg, config, {"config": str(config)})
    rows = _run_rows(cfg, str(state.state_details.flow_run_id))
    if rows:
        out.print(_results_table(rows, f"TextME results: {cfg.name}", [e.name for e in cfg.evaluation]))
    out.print(f"catalog: {Workspace.of(cfg).catalog}  (textme query {config} \"SELECT * FROM latest_results\")")
    page = Workspace.of(cfg).report_dir(str(state.state_details.flow_run_id)) / "index.html"
    if page.is_file():
        out.print(f"report: {page}  (textme report {config} --open)", markup=False, highlight=False, soft_wrap=True)


@app.command("evaluate")
def evaluate_cmd(
    config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Evaluation entries to run (default: all)."),
) -> None:
    """Re-run evaluations with the heads the pipeline already trained."""
    cfg = _load(config, check_inputs=True)
    known = [spec.name for spec in cfg.evaluation]
    for name in only or []:
        if name not in known:  # before the flow starts: no Prefect traceback for a typo
            _fail(f"{config}: unknown evaluation {name!r} (known: {', '.join(known) or 'none'})")
    from flows.evaluate import evaluate_only

    state = _run_flow(evaluate_only, cfg, config, {"config": str(config), "evaluations": only or None})
    rows = _run_rows(cfg, str(state.state_details.flow_run_id))
    if rows:
        out.print(_results_table(rows, f"TextME evaluation: {cfg.name}", [e.name for e in cfg.evaluation]))


@app.command()
def refresh(
    config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
    force: bool = typer.Option(False, help="Run the pipeline even if no source changed."),
) -> None:
    """Re-run the pipeline if a caption source changed since the last refresh.

    Nothing changed: the check is recorded and the command ends, no flow started."""
    if not force:
        from tasks.refresh_check import check_sources, record_check

        cfg = _load(config)
        try:
            check = check_sources(cfg)
        except _user_errors() as exc:
            _fail(str(exc))
        if not check.changed:
            record_check(cfg, check)
            out.print(check.nothing_to_run(), markup=False, highlight=False, soft_wrap=True)
            out.print("changed: nothing; pipeline ran: False")
            return
    cfg = _load(config, check_inputs=True)
    from flows.refresh import refresh as refresh_flow

    state = _run_flow(refresh_flow, cfg, config, {"config": str(config), "force": force})
    result = state.result()
    out.print(f"changed: {', '.join(result['changed']) or 'nothing'}; pipeline ran: {result['ran']}")


@app.command()
def status(
    config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Per stage and encoder: cached, missing or stale; vectors per cache namespace.

    Loads no model: keys come from encoder identities, the cache and the tables."""
    cfg = _load(config, check_options=True)
    from tasks.status import collect_status

    try:
        report = collect_status(cfg)
    except _user_errors() as exc:
        _fail(str(exc))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1, default=str) + "\n")
        return
    table = Table(title=f"Pipeline status: {cfg.name}")
    for col in ("stage", "unit", "status", "key", "detail"):
        table.add_column(col)
    colour = {"cached": "green", "stale": "yellow", "missing": "red"}
    for st in report["stages"]:
        table.add_row(st["stage"], st["unit"], f"[{colour[st['status']]}]{st['status']}[/]",
                      (st["key"] or "")[:20], st["detail"])
    out.print(table)
    ns_table = Table(title=f"Embedding cache: {cfg.cache}")
    for col in ("encoder", "tower", "namespace", "vectors", "dim"):
        ns_table.add_column(col, justify="right" if col in ("vectors", "dim") else "left")
    for ns in report["namespaces"]:
        ns_table.add_row(ns["encoder"], ns["tower"], ns["id"][:16], str(ns["count"]), str(ns["dim"] or ""))
    out.print(ns_table)
    if report["runs"]:
        last = report["runs"][-1]
        out.print(f"last run: {last['run_id']} {last['flow']} {last['status']} (started {last['started_at']})")


@app.command()
def query(
    first: str = typer.Argument(..., metavar="CONFIG",
                                help="Pipeline config (YAML) whose workdir holds the catalog."),
    sql: Optional[str] = typer.Argument(None, metavar="SQL",
                                        help="One read-only SQL statement over the catalog (results, "
                                             "latest_results, runs, training, offsets, captions, embed_log)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Alias: textme query \"SQL\" --config CONFIG."),
    catalog: Optional[Path] = typer.Option(None, "--catalog", help="Query this catalog.duckdb file instead."),
    limit: int = typer.Option(200, help="Rows shown at most."),
) -> None:
    """Run one read-only SQL statement on the DuckDB catalog and show the rows.

    Only SELECT (WITH, FROM, DESCRIBE, SHOW, SUMMARIZE) and EXPLAIN; no other file is read or written."""
    import duckdb

    from storage.catalog import QueryRefused, catalog_problems, open_read_only, read_only_statement
    from storage.parts import summarize

    if config is not None and catalog is not None:
        _fail("give one of CONFIG, --config CONFIG or --catalog PATH")
    if config is not None or catalog is not None:
        if sql is not None:
            _fail('give the SQL once: textme query CONFIG "SQL" (or "SQL" --config CONFIG / --catalog PATH)')
        sql = first
    elif sql is None:
        _fail('no SQL given: textme query CONFIG "SQL"')
    else:
        config = Path(first)
    if catalog is None:
        catalog = Workspace.of(_load(config)).catalog
    if not catalog.is_file():
        _fail(f"{catalog}: no catalog yet (run `textme run` first)")
    try:
        statement = read_only_statement(sql)
    except QueryRefused as exc:
        _fail(f"query refused: {exc}")
    except duckdb.Error as exc:
        _fail(f"query failed: {str(exc).splitlines()[0]}")
    try:
        con = open_read_only(catalog)
        try:
            cursor = con.execute(statement)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(limit + 1)
            # Results of stand-in models are never shown without saying so.
            stand_in = "results" in sql.lower() and bool(
                con.execute("select coalesce(bool_or(stand_in), false) from results").fetchone()[0])
            problems = catalog_problems(con)
        finally:
            con.close()
    except duckdb.PermissionException as exc:  # a file other than the catalog
        _fail(f"query refused: queries read nothing but the catalog ({str(exc).splitlines()[0]})")
    except duckdb.Error as exc:
        _fail(f"query failed: {str(exc).splitlines()[0]}")
    from tasks.stand_in import STAND_IN_NOTE

    table = Table(caption=f"first {limit} rows" if len(rows) > limit else None)
    for col in columns:
        table.add_column(col)
    for row in rows[:limit]:
        table.add_row(*("" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row))
    out.print(table)
    if stand_in:
        out.print(f"These results include rows with stand_in = true. {STAND_IN_NOTE}")
    for line in summarize(problems):  # parts the catalog's build left out
        err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


def _when(value: Any) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


@app.command()
def runs(
    config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
    limit: int = typer.Option(20, help="Latest runs shown at most (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every column) instead of a table."),
) -> None:
    """The flow runs of this workdir, one line each: id, flow, status, started, finished,
    duration. A run left `running` by a process that died is shown `crashed`."""
    cfg = _load(config)
    from tasks.common import open_tables
    from tasks.runs import list_runs

    found = list_runs(open_tables(cfg))
    shown = found[-limit:] if limit > 0 else found
    if as_json:
        sys.stdout.write(json.dumps(shown, indent=1, default=str) + "\n")
        return
    if not found:
        out.print(f"no runs yet in {cfg.workdir}")
        return
    caption = f"latest {len(shown)} of {len(found)} runs" if len(shown) < len(found) else None
    table = Table(title=f"Runs: {cfg.name}", caption=caption)
    for col in ("run", "flow", "status", "started (UTC)", "finished (UTC)", "duration"):
        table.add_column(col, justify="right" if col == "duration" else "left", no_wrap=col != "flow")
    colour = {"completed": "green", "running": "cyan", "failed": "red", "crashed": "red"}
    for r in shown:
        status = r["status"] + (f" (on {r['host']})" if r["status"] == "running" and r.get("host") not in
                                (None, _this_host()) else "")
        table.add_row(r["run_id"][:8], r["flow"].removeprefix("textme-"),
                      f"[{colour.get(r['status'], 'white')}]{status}[/]", _when(r["started_at"]),
                      _when(r["finished_at"]), _duration(r["duration_s"]))
    out.print(table)


def _this_host() -> str:
    from tasks.runs import HOST

    return HOST


def _tables_of(config: Path):
    cfg = _load(config)
    from tasks.common import open_tables

    return cfg, open_tables(cfg)


@tables_app.command("compact")
def tables_compact(
    config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
    table: Optional[list[str]] = typer.Option(None, "--table", help="Only these tables (default: all)."),
) -> None:
    """Merge each table partition's part files into one (no row lost; readers see the
    old parts or the merged one, never both), then rebuild the catalog."""
    from storage.tables import SCHEMAS

    cfg, tables = _tables_of(config)
    for name in table or []:
        if name not in SCHEMAS:
            _fail(f"--table: unknown table {name!r}; known: {', '.join(SCHEMAS)}")
    for name in table or list(SCHEMAS):
        report = tables.compact(name)
        if report.parts_before:
            out.print(str(report))
    _rebuild(cfg, tables)


@tables_app.command("adopt")
def tables_adopt(config: Path = typer.Argument(..., help="Pipeline config (YAML).")) -> None:
    """List in the tables' manifests the parts written before manifests existed (named
    part-*.parquet and readable with the table's schema); other files stay left out."""
    from storage.tables import SCHEMAS

    cfg, tables = _tables_of(config)
    refused = []
    for name in SCHEMAS:
        adopted, left = tables.adopt(name)
        refused += left
        if adopted:
            out.print(f"table {name}: adopted {len(adopted)} parts")
    for p in refused:
        err.print(f"warning: {p}", markup=False, highlight=False, soft_wrap=True)
    if not refused:
        out.print("every Parquet file of the tables is listed")
    _rebuild(cfg, tables, unlisted=False)


def _rebuild(cfg: Any, tables: Any, *, unlisted: bool = True) -> None:
    """Rebuild the catalog and name, one line each, the parts it left out."""
    from storage.catalog import build_catalog, catalog_problems, open_read_only
    from storage.parts import summarize

    path = build_catalog(tables, Workspace.of(cfg).catalog)
    con = open_read_only(path)
    try:
        problems = [p for p in catalog_problems(con) if unlisted or p.kind != "unlisted"]
    finally:
        con.close()
    out.print(f"catalog rebuilt: {path}")
    for line in summarize(problems):
        err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def search(
    config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
    query: str = typer.Argument(..., help="Words, or a file (image, WAV, point cloud, ...) to find the like of."),
    top: int = typer.Option(10, "--top", "-k", "--k", help="Results to show."),
    modality: Optional[str] = typer.Option(None, help="Only items of this modality (image, audio, point, ...)."),
    encoder: Optional[str] = typer.Option(None, help="The encoder that reads a file query (default: by its "
                                                     "extension)."),
    exact: bool = typer.Option(False, "--exact", help="Exact search even where an ANN index exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as JSON."),
) -> None:
    """Search every modality's index at once with a text or file query, in the pivot space."""
    cfg = _load(config)
    from storage.errors import DamagedSegmentError
    from tasks.search import search as run_search

    try:
        res = run_search(cfg, query, modality=modality, k=top, encoder=encoder, exact=exact)
    except _user_errors() as exc:
        _fail(str(exc))
    except DamagedSegmentError as exc:
        _fail(f"search: {_damaged_line(exc, config)}", EXIT_RUN_FAILED)
    if res.missing:
        err.print(f"note: no index yet for {', '.join(res.missing)} (run `textme run {config}`)", markup=False,
                  highlight=False, soft_wrap=True)
    if as_json:
        sys.stdout.write(json.dumps(res.as_dict(), indent=1) + "\n")
        return
    from tasks.results import STAND_IN_NOTE

    title = f"{query!r}" if res.kind == "text" else f"{query} (through {res.query_encoder})"
    table = Table(title=title, caption=STAND_IN_NOTE if res.stand_in else None, caption_style="bold yellow")
    for col in ("rank", "score", "modality", "encoder", "item"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left",
                         overflow="fold" if col == "item" else "ellipsis")
    for i, h in enumerate(res.hits, start=1):
        table.add_row(str(i), f"{h.score:.3f}", h.modality or "", h.encoder, h.item)
    out.print(table)


@app.command()
def report(
    config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
    run_id: Optional[str] = typer.Option(None, "--run", help="Run id (default: the latest run with results)."),
    open_page: bool = typer.Option(False, "--open", help="Open the HTML page in a web browser."),
) -> None:
    """Write a run's report again (plots + HTML) from the tables and the cache; runs nothing."""
    cfg = _load(config)
    from tasks.report import NothingToReport, write_report

    try:
        rep = write_report(cfg, run_id, reuse=False)
    except NothingToReport as exc:
        _fail(str(exc))
    path = rep.folder / "index.html"
    for line in [*rep.notes, *rep.failures]:
        err.print(f"note: {line}", markup=False, highlight=False)
    out.print(f"report of run {rep.lineage.run_id}: {len(rep.figures)} figures; {path}", markup=False,
              highlight=False, soft_wrap=True)
    if open_page:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


@app.command("verify")
def verify_cmd(config: Path = typer.Argument(..., help="Pipeline config (YAML).")) -> None:
    """Check every artifact the config's results depend on; one line per problem, exit 1 if any."""
    cfg = _load(config)
    import logging

    from tasks.verify import verify_all

    logging.getLogger("storage.tables").setLevel(logging.ERROR)  # its parts' problems are listed below

    try:
        problems = verify_all(cfg)
    except _user_errors() as exc:
        _fail(str(exc))
    for p in problems:
        err.print(f"problem: {p}", markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(EXIT_RUN_FAILED)
    out.print(f"{cfg.name}: every stage output, table part and cache segment is intact")


@cache_app.command("verify")
def cache_verify(
    config: Path = typer.Argument(..., help="Pipeline config (YAML)."),
    quarantine: bool = typer.Option(False, "--quarantine", help="Move damaged segments aside (recomputed next run)."),
) -> None:
    """Check every cache namespace's segments; exit 1 if any is damaged (and not quarantined)."""
    cfg = _load(config)
    from tasks.common import open_cache

    reports = open_cache(cfg).verify(quarantine=quarantine)
    table = Table(title=f"Cache verify: {cfg.cache}")
    for col in ("namespace", "segments", "rows", "damaged", "unpublished"):
        table.add_column(col)
    bad = False
    for r in reports:
        bad = bad or not r.ok
        table.add_row(r.namespace[:16], str(r.segments), str(r.rows), str(len(r.bad)), str(len(r.unpublished)))
    out.print(table)
    for r in reports:
        if not r.ok:
            err.print(str(r), markup=False)
    moved = sum(len(r.quarantined) for r in reports)
    if moved:
        out.print(f"quarantined {moved} damaged segment(s) (moved to quarantine/ in their namespace); "
                  f"run `textme run {config}` again: their vectors are recomputed", markup=False, highlight=False,
                  soft_wrap=True)
        return
    if bad:
        raise typer.Exit(EXIT_RUN_FAILED)


@cache_app.command("gc")
def cache_gc(
    configs: list[Path] = typer.Argument(..., help="Config(s) whose namespaces are kept."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed."),
    grace: float = typer.Option(3600.0, "--grace", help="Seconds a partial segment or temporary file is left "
                                "alone (it may be a write in progress)."),
) -> None:
    """Delete cache namespaces no given config uses (and the stage records that point to
    them), and what killed writers left: partial segment folders and stale temporary files."""
    from tasks.common import open_cache
    from tasks.status import collect_gc

    cfgs = [_load(c) for c in configs]
    try:
        removed = collect_gc(cfgs, dry_run=dry_run)
        leftovers = {}
        for cfg in {c.cache: c for c in cfgs}.values():
            leftovers.update(open_cache(cfg).remove_leftovers(grace, dry_run=dry_run))
    except _user_errors() as exc:
        _fail(str(exc))
    verb = "would remove" if dry_run else "removed"
    if not removed and not leftovers:
        out.print("nothing to remove")
    for ns in removed:
        out.print(f"{verb} namespace {ns['id'][:16]} ({ns['count']} vectors; {ns['identity']})")
    for ns_id, paths in leftovers.items():
        for rel in paths:
            what = "partial segment" if rel.startswith("segments/") else "stale temporary file"
            out.print(f"{verb} {what} {ns_id[:16]}/{rel}", markup=False, highlight=False, soft_wrap=True)


@app.command("export")
def export_cmd(
    config: Path = typer.Argument(..., help="Pipeline config (YAML) whose trained heads to export."),
    out_dir: Path = typer.Option(..., "--out", help="Folder to write (the layout of SoyeonHH/TextME)."),
    encoder: Optional[list[str]] = typer.Option(None, "--encoder", help="Only these encoders (default: all trained)."),
) -> None:
    """Write the trained heads and offsets in the official layout, to share or use as `released:`."""
    cfg = _load(config)
    from tasks.released import export_heads

    try:
        entries = export_heads(cfg, out_dir, encoder or None)
    except _user_errors() as exc:
        _fail(str(exc))
    table = Table(title=f"Exported to {out_dir}")
    for col in ("encoder", "head", "offsets", "head sha256"):
        table.add_column(col)
    for e in entries:
        table.add_row(e["encoder"], e["released"]["head"], e["released"]["offset"], e["head_sha256"][:16])
    out.print(table)
    snippet = "\n".join(f"  {e['encoder']}:\n    released: {{head: {out_dir / e['released']['head']}, "
                        f"offset: {out_dir / e['released']['offset']}}}" for e in entries)
    out.print(f"to evaluate them as variant `released` (in a config's encoders):\n{snippet}",
              markup=False, highlight=False)


@config_app.command("schema")
def config_schema(
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write it to this file instead."),
) -> None:
    """Print the JSON Schema of the YAML config as written (docs/CONFIG.md: editor set-up)."""
    from tasks.config import schema_json

    if output is None:
        sys.stdout.write(schema_json())
    else:
        output.write_text(schema_json(), encoding="utf-8")


def _option_value(text: str) -> Any:
    """A reader option's value: a JSON number / bool / null when it reads as one, else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if value is None or isinstance(value, (bool, int, float)) else text


@app.command("manifest")
def manifest_cmd(
    name: Optional[str] = typer.Argument(None, help="Benchmark reader (see --list)."),
    root: Optional[Path] = typer.Argument(None, help="The benchmark's downloaded folder (or file)."),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Manifest to write (JSONL)."),
    split: Optional[str] = typer.Option(None, help="Split (default: the benchmark's first; see --list)."),
    items_dir: Optional[Path] = typer.Option(
        None, "--items-dir", help="Where readers that convert items write them (default: <out>_items/)."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o", help="Reader option KEY=VALUE (repeatable)."),
    list_readers: bool = typer.Option(False, "--list", help="Name the benchmark readers and exit."),
) -> None:
    """Write an evaluation manifest from a benchmark as it is distributed."""
    from textme.data import DataError, list_benchmarks, parse_rows, read_benchmark, write_manifest

    if list_readers:  # one line each; layouts and downloads: docs/BENCHMARKS.md
        for b in list_benchmarks():
            sys.stdout.write(f"{b.name:<13} {b.task:<15} {b.description}  [splits: {', '.join(b.splits)}]\n")
        return
    if name is None or root is None or out_file is None:
        _fail("give NAME ROOT --out FILE (or --list)")
    options: dict[str, Any] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--option {item!r}: expected KEY=VALUE")
        options[key.strip()] = _option_value(value)
    if items_dir is None:
        items_dir = out_file.with_name(f"{out_file.stem}_items")
    try:
        data = read_benchmark(name, root, split, items_dir=items_dir, **options)
        inputs = parse_rows(data.rows, data.task, base=root, source=str(out_file), shown=f"{name} ({root})")
        n = write_manifest(data.rows, out_file)
    except DataError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{out_file}: cannot write ({exc.strerror or exc})")
    detail = {"retrieval": f"{len(inputs.items)} items, {len(inputs.captions)} captions",
              "classification": f"{len(inputs.items)} items, {len(set(inputs.labels))} labels",
              "mixed_search": f"{len(inputs.docs)} documents, {len(inputs.queries)} queries",
              "emergent": f"{len(inputs.source_items)} pairs"}[data.task]
    out.print(f"wrote {n} rows ({data.task}, {data.label}: {detail}) to {out_file}", highlight=False,
              soft_wrap=True)
    for note in data.notes:
        out.print(f"note: {note}", highlight=False, soft_wrap=True)


# The exit status `_end_now` ends the process with; `main` sets it from how `app` ended.
_exit_status = 1


def _end_now() -> None:
    """The last exit handler: flush what is buffered, then end without the interpreter's
    module-by-module teardown (os._exit)."""
    import logging

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    logging.shutdown()
    os._exit(_exit_status)


def main() -> None:
    """The `textme` command (console script, `python -m flows.cli`).

    Ends the process once the shutdown work is done (Prefect's event and log queues
    drained, every other exit handler run, output flushed), skipping the interpreter's
    teardown of every module: after a Prefect import that teardown took 0.3-0.5 s of
    every command, a tenth of a warm `textme run`. Registered first, `_end_now` runs
    after every handler registered later (atexit runs them last in, first out), and
    nothing registers one before `main` starts (flows.cli imports no such module).
    Tests call `app` and keep the normal exit.
    """
    global _exit_status
    atexit.register(_end_now)
    try:
        app()
    except SystemExit as exc:
        code = exc.code
        _exit_status = code if isinstance(code, int) else (0 if code is None else 1)
        raise
    except KeyboardInterrupt:
        _exit_status = 130
        raise
    _exit_status = 0


if __name__ == "__main__":
    main()
