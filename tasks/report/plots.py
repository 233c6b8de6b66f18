"""The report's figures, drawn with matplotlib's object API (no pyplot: no global state,
no display, safe in the flow's worker threads; PNGs come from the Agg canvas).

- `gap_figure`: one encoder's text and modal embeddings, 2-D PCA per view (before
  centring, after centring, after the head, ...), same axes in every panel, the gap norm
  in each panel's title;
- `loss_figure`: training loss per epoch of every head (textme solid, uncentred dashed);
- `eval_figure`: one evaluation's variants side by side, one panel per metric; bars of
  stand-in models are hatched.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tasks.report.gap import GapView

__all__ = ["VARIANT_ORDER", "gap_figure", "loss_figure", "eval_figure", "png_bytes", "pca_2d", "panel_titles"]

#: Bar order; variants the rows hold beyond these follow in first-seen order.
VARIANT_ORDER = ("textme", "released", "uncentred", "native", "chance")
_VARIANT_COLOURS = {"textme": "#1f77b4", "released": "#9467bd", "uncentred": "#ff7f0e", "native": "#2ca02c",
                    "chance": "#9a9a9a"}
_TEXT_COLOUR, _MODAL_COLOUR = "#1f77b4", "#d62728"
_MAX_POINTS = 1500  # per side and panel: enough to see the clouds, cheap to draw
_DPI = 100
_STAND_IN = "stand-in models"


def png_bytes(fig: Figure) -> bytes:
    """The figure as a PNG of at most 256 colours: plots lose nothing to a palette, and
    the files (inline in the page and the Prefect artifact, twice per run) are about a
    third of the size. No timestamp or version in the file: same data, same bytes."""
    from PIL import Image

    fig.set_dpi(_DPI)
    buf = io.BytesIO()
    fig.savefig(buf, format="raw", dpi=_DPI)
    width, height = fig.canvas.get_width_height(physical=True)
    image = Image.frombuffer("RGBA", (width, height), buf.getbuffer(), "raw", "RGBA", 0, 1).convert("RGB")
    out = io.BytesIO()
    image.quantize(256, dither=Image.Dither.NONE).save(out, format="PNG")
    return out.getvalue()


def panel_titles(fig: Figure) -> list[str]:
    """Titles of the figure's panels (what the report records beside each PNG)."""
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def pca_2d(text: np.ndarray, modal: np.ndarray, fit_rows: int = _MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Both point sets on the first two principal axes of their union, fitted on at most
    `fit_rows` rows of each (seeded; sklearn picks a randomized SVD when wide, so a
    2560-d pivot space costs no full SVD), signed so the text centroid lies left of the
    modal one."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    fit = np.concatenate([_thin(text, rng, fit_rows), _thin(modal, rng, fit_rows)]).astype(np.float64)
    pca = PCA(n_components=min(2, *fit.shape), svd_solver="auto", random_state=0).fit(fit)
    t, m = pca.transform(text.astype(np.float64)), pca.transform(modal.astype(np.float64))
    if t.shape[1] < 2:
        t, m = np.pad(t, ((0, 0), (0, 2 - t.shape[1]))), np.pad(m, ((0, 0), (0, 2 - m.shape[1])))
    flip = np.where(t.mean(0) > m.mean(0), -1.0, 1.0)
    return t * flip, m * flip


def _thin(points: np.ndarray, rng: np.random.Generator, n: int = _MAX_POINTS) -> np.ndarray:
    if len(points) <= n:
        return points
    return points[np.sort(rng.choice(len(points), n, replace=False))]


def gap_figure(encoder: str, modality: str, views: Sequence[GapView], *, stand_in: bool) -> Figure:
    fig = Figure(figsize=(4.2 * len(views), 4.8))
    axes = fig.subplots(1, len(views), sharex=True, sharey=True, squeeze=False)[0]
    projected = [pca_2d(v.text, v.modal) for v in views]
    lim = 1.08 * max(float(np.abs(np.concatenate(p)).max()) for p in projected) or 1.0
    rng = np.random.default_rng(0)
    for ax, view, (t, m) in zip(axes, views, projected):
        ax.scatter(*_thin(t, rng).T, s=7, alpha=0.35, color=_TEXT_COLOUR, linewidths=0, label=f"text (n={len(t)})",
                   rasterized=True)
        ax.scatter(*_thin(m, rng).T, s=7, alpha=0.35, color=_MODAL_COLOUR, linewidths=0,
                   label=f"{modality} (n={len(m)})", rasterized=True)
        for pts, colour in ((t, _TEXT_COLOUR), (m, _MODAL_COLOUR)):
            ax.scatter(*pts.mean(0), s=140, marker="X", color=colour, edgecolors="black", linewidths=1.2, zorder=3)
        ax.plot(*np.stack([t.mean(0), m.mean(0)]).T, color="black", linewidth=1.2, zorder=2)
        ax.set_title(f"{view.label} ({view.space})\n‖μ_text − μ_{modality}‖ = {view.gap_norm:.3f}", fontsize=10)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("PC 1")
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("PC 2")
    axes[0].legend(loc="upper left", fontsize=8, markerscale=2, framealpha=0.9)
    note = f"; {_STAND_IN}" if stand_in else ""
    fig.suptitle(f"Modality gap of {encoder}: PCA of the offsets sample, per view (X: centroids){note}",
                 fontsize=11)
    fig.subplots_adjust(left=0.06 if len(views) < 3 else 0.045, right=0.99, bottom=0.1, top=0.84, wspace=0.12)
    return fig


def loss_figure(curves: Sequence[tuple[str, str, list[int], list[float]]], *, stand_in: bool) -> Figure:
    """curves: (encoder, variant, epochs, losses) per head; one panel per variant (the
    uncentred heads' curves would hide under the textme ones: BatchNorm absorbs the
    constant shift, so both train alike), same y axis, one colour per encoder."""
    variants = list(dict.fromkeys(c[1] for c in curves))
    encoders = list(dict.fromkeys(c[0] for c in curves))
    colours = {e: f"C{i % 10}" for i, e in enumerate(encoders)}
    fig = Figure(figsize=(2.2 + 4.6 * len(variants), 4.4))
    axes = fig.subplots(1, len(variants), sharey=True, squeeze=False)[0]
    for ax, variant in zip(axes, variants):
        for encoder, v, epochs, losses in curves:
            if v == variant:
                ax.plot(epochs, losses, color=colours[encoder], marker="o" if len(epochs) <= 30 else None,
                        markersize=3, label=encoder)
        ax.set_title(f"{variant} heads", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("training loss")
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    note = f" ({_STAND_IN})" if stand_in else ""
    fig.suptitle(f"Training loss per epoch{note}", fontsize=11)
    fig.subplots_adjust(left=0.8 / fig.get_figwidth(), right=1 - 1.5 / fig.get_figwidth(), bottom=0.12,
                        top=0.86, wspace=0.08)
    return fig


def _lower_is_better(metric: str) -> bool:
    return "rank" in metric


def _grouped_bars(ax: Any, metrics: list[str], variants: list[str], value: dict[tuple[str, str], dict]) -> None:
    """Bars of the variants each metric has, centred on the metric's tick; stand-in bars
    hatched, values on top."""
    width = 0.8 / len(variants)
    for i, metric in enumerate(metrics):
        present = [v for v in variants if (metric, v) in value]
        for j, variant in enumerate(present):
            cell = value[(metric, variant)]
            bars = ax.bar(i + (j - (len(present) - 1) / 2) * width, cell["value"], width * 0.95,
                          color=_VARIANT_COLOURS.get(variant, "#444444"), edgecolor="black", linewidth=0.5,
                          hatch="///" if cell["stand_in"] else "")
            ax.bar_label(bars, fmt="%.1f", fontsize=6.5, padding=1.5, rotation=90)
    ax.set_xticks(range(len(metrics)), metrics, fontsize=8, rotation=20 if len(metrics) > 4 else 0)
    ax.set_xlim(-0.6, len(metrics) - 0.4)
    top = max(c["value"] for c in value.values() if c["metric"] in metrics)
    ax.set_ylim(0, max(top, 1e-9) * 1.22)
    ax.grid(axis="y", alpha=0.25)


def eval_figure(name: str, task: str, rows: Sequence[dict[str, Any]]) -> Figure:
    """Grouped bars: one group per metric (first-seen order), one bar per variant present
    (VARIANT_ORDER first); rank metrics (lower is better) get a panel of their own."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    seen = list(dict.fromkeys(r["variant"] for r in rows))
    variants = [v for v in VARIANT_ORDER if v in seen] + [v for v in seen if v not in VARIANT_ORDER]
    value = {(r["metric"], r["variant"]): r for r in rows}
    higher = [m for m in metrics if not _lower_is_better(m)]
    lower = [m for m in metrics if _lower_is_better(m)]
    panels = [(higher, "higher is better (%)"), (lower, "lower is better")]
    panels = [(ms, label) for ms, label in panels if ms]
    ratios = [max(len(ms), 1.5) for ms, _ in panels]
    fig = Figure(figsize=(min(13.0, max(6.0, 0.3 * len(variants) * sum(ratios) + 1.5)), 4.2))
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": ratios})[0]
    for ax, (ms, label) in zip(axes, panels):
        _grouped_bars(ax, ms, variants, value)
        ax.set_title(label, fontsize=9)
    handles = [Patch(facecolor=_VARIANT_COLOURS.get(v, "#444444"), edgecolor="black", label=v) for v in variants]
    stand_in = any(r["stand_in"] for r in rows)
    if stand_in:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="///", label="stand-in models"))
    fig.suptitle(f"{name} ({task})", fontsize=11, y=0.98)
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.915), fontsize=8,
               ncols=min(len(handles), 6), frameon=False)
    fig.subplots_adjust(left=0.6 / fig.get_figwidth(), right=0.99, bottom=0.16, top=0.76, wspace=0.2)
    return fig
