"""The report's figures for one run, each drawn once per content.

A figure is a pure function of a few fingerprints: a gap figure of its offsets and
heads (their files never change under a key), the loss figure of the heads' keys, a bar
chart of its rows' values. Each is stored under `<workdir>/reports/.figures/<fp>.png`
(+ `.json`: panel titles and details), with `fp` over those inputs and over the drawing
code itself (this package's plotting sources and matplotlib's version), so a re-run
with nothing changed draws nothing and loads neither matplotlib nor torch; a changed
plot function redraws everything once. `reuse=False` (what `textme report` does)
always redraws, and refreshes the stored copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from tasks.report.lineage import RunLineage
from tasks.workspace import Workspace, atomic_write_text

__all__ = ["ReportFigure", "FigureStore", "run_figures"]

_DRAWING_CODE = ("plots.py", "gap.py")


@dataclass
class ReportFigure:
    file: str  # PNG file name inside the report folder
    kind: str  # gap | training | evaluation
    title: str  # one line, for headings and alt text
    subject: str | None  # the encoder (gap) or evaluation name
    panels: list[str]  # panel titles, as drawn
    png: bytes = field(repr=False)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. gap norms per view

    def manifest(self) -> dict[str, Any]:
        return {"file": self.file, "kind": self.kind, "title": self.title, "subject": self.subject,
                "panels": self.panels, **self.details}


@lru_cache(maxsize=1)
def _code_version() -> str:
    from importlib.metadata import version

    h = hashlib.sha256(version("matplotlib").encode())  # without importing it
    for name in _DRAWING_CODE:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


class FigureStore:
    """PNG + JSON sidecar per figure fingerprint (write-then-rename, so never half a file)."""

    def __init__(self, ws: Workspace, reuse: bool = True):
        self.dir = ws.reports / ".figures"
        self.reuse = reuse

    def get_or_draw(self, key: dict[str, Any], draw: Callable[[], tuple[Any, dict[str, Any]]]) -> tuple[bytes, dict]:
        """(png, sidecar) for `key`; `draw()` returns (matplotlib Figure, details) on a miss."""
        from storage.fingerprint import fingerprint

        fp = fingerprint({**key, "code": _code_version()}, kind="report-figure")
        png_path, meta_path = self.dir / f"{fp}.png", self.dir / f"{fp}.json"
        if self.reuse and png_path.is_file() and meta_path.is_file():
            try:
                return png_path.read_bytes(), json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass  # unreadable: draw it again
        from tasks.report.plots import panel_titles, png_bytes

        fig, details = draw()
        png = png_bytes(fig)
        meta = {"panels": panel_titles(fig), "details": details}
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = png_path.with_name(f".{png_path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(png)
        os.replace(tmp, png_path)
        atomic_write_text(meta_path, json.dumps(meta, default=str))
        return png, meta


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "x"


def _gap(lin: RunLineage, store: FigureStore, failures: list[str]) -> list[ReportFigure]:
    out = []
    for enc in lin.encoders:
        row = lin.offsets.get(enc)
        if row is None:
            continue
        heads = {v: h for (e, v), h in lin.heads.items() if e == enc}
        dataset = lin.snapshot.datasets.get(row["dataset"])
        modality = getattr(dataset, "modality", None) or "modal"

        def draw(row=row, heads=heads, modality=modality, enc=enc):
            from tasks.report.gap import gap_views
            from tasks.report.plots import gap_figure

            views = gap_views(lin.cfg, row, {v: h.path for v, h in heads.items()}, seed=lin.snapshot.offsets.seed)
            return gap_figure(enc, modality, views, stand_in=lin.stand_in), {
                "views": [{"label": v.label, "space": v.space, "gap_norm": v.gap_norm} for v in views]}

        key = {"kind": "gap", "encoder": enc, "modality": modality, "offset_fp": row["offset_fp"],
               "heads": {v: h.projection_fp for v, h in heads.items()}, "stand_in": lin.stand_in,
               "seed": lin.snapshot.offsets.seed}
        try:
            png, meta = store.get_or_draw(key, draw)
        except Exception as exc:  # one encoder's data missing must not cost the others
            failures.append(f"{enc}: gap figure not drawn: {type(exc).__name__}: {exc}")
            continue
        out.append(ReportFigure(f"gap-{_safe(enc)}.png", "gap", f"Modality gap of {enc} before and after centring",
                                enc, meta["panels"], png, {"offset_fp": row["offset_fp"], "gap_norm": row["gap_norm"],
                                                           **meta["details"]}))
    return out


def _training(lin: RunLineage, store: FigureStore, failures: list[str]) -> list[ReportFigure]:
    order = {e: i for i, e in enumerate(lin.encoders)}
    heads = sorted(lin.heads.values(), key=lambda h: (order.get(h.encoder, len(order)), h.variant != "textme"))
    if not heads:
        return []

    def draw():
        from tasks.report.plots import loss_figure

        curves = [(h.encoder, h.variant, [r["epoch"] for r in h.history], [r["loss"] for r in h.history])
                  for h in heads]
        return loss_figure(curves, stand_in=lin.stand_in), {}

    key = {"kind": "training", "heads": [[h.encoder, h.variant, h.projection_fp] for h in heads],
           "stand_in": lin.stand_in}
    try:
        png, meta = store.get_or_draw(key, draw)
    except Exception as exc:
        failures.append(f"training: loss figure not drawn: {type(exc).__name__}: {exc}")
        return []
    details = {"heads": [{"encoder": h.encoder, "variant": h.variant, "projection_fp": h.projection_fp,
                          "epochs": len(h.history)} for h in heads]}
    return [ReportFigure("training-loss.png", "training", "Training loss per epoch", None, meta["panels"], png,
                         details)]


def _evaluations(lin: RunLineage, store: FigureStore, failures: list[str]) -> list[ReportFigure]:
    by_eval: dict[str, list[dict[str, Any]]] = {}
    for r in lin.results:
        by_eval.setdefault(r["eval_name"], []).append(r)
    out = []
    for name, rows in by_eval.items():
        task = rows[0]["task"]

        def draw(name=name, task=task, rows=rows):
            from tasks.report.plots import eval_figure

            return eval_figure(name, task, rows), {}

        key = {"kind": "evaluation", "name": name, "task": task,
               "rows": [[r["metric"], r["variant"], repr(r["value"]), r["stand_in"]] for r in rows]}
        try:
            png, meta = store.get_or_draw(key, draw)
        except Exception as exc:
            failures.append(f"{name}: bar chart not drawn: {type(exc).__name__}: {exc}")
            continue
        out.append(ReportFigure(f"eval-{_safe(name)}.png", "evaluation", f"{name} ({task}): variants per metric",
                                name, meta["panels"], png,
                                {"variants": list(dict.fromkeys(r["variant"] for r in rows))}))
    return out


def run_figures(lin: RunLineage, ws: Workspace, failures: list[str], *, reuse: bool = True) -> list[ReportFigure]:
    """Every figure of the run: gap per encoder, the loss curves, a chart per evaluation.
    A figure that cannot be drawn adds a line to `failures` instead."""
    store = FigureStore(ws, reuse)
    return [*_gap(lin, store, failures), *_training(lin, store, failures), *_evaluations(lin, store, failures)]
