"""Evaluation only: re-evaluate with the heads and offsets the pipeline already made.

Finds the current config's trained heads through their keys (tasks/plan.py) and runs
the evaluation entries (all, or those named) plus the results stage. Useful after
adding an evaluation entry or editing a manifest: nothing is ingested, embedded (beyond
the evaluation's own inputs, through the cache) or trained. Fails with one line naming
what is missing when the pipeline has not run for this config.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.pipeline import prepare
from tasks.common import now, with_workspace
from tasks.config import ConfigError
from tasks.evaluate import evaluate
from tasks.failures import result_or_first_failure
from tasks.plan import replay
from tasks.results import record_run, write_results
from tasks.workspace import Workspace

__all__ = ["evaluate_only", "heads_for"]


def heads_for(rep: Any, encoders: tuple[str, ...], ablate: bool = False) -> dict[str, Any]:
    """{encoder: {"offset", "textme", "uncentred", "released"}} manifests (None where the
    config has no such stage), or a one-line error naming what is not computed yet.
    (`ablate` is kept for callers; the replay already knows whether there are uncentred heads.)"""
    out = {}
    for e in encoders:
        h = rep.heads[e]
        missing = [st for st in h.values() if st is not None and st.manifest is None]
        if missing:
            what = ", ".join(f"{st.stage} {st.unit}" for st in missing)
            raise ConfigError(f"{rep.cfg.path}: no {what} for the current config; run `textme run` first")
        out[e] = {k: (None if st is None else st.manifest) for k, st in h.items()}
    return out


@flow(name="textme-evaluate", log_prints=True)
def evaluate_only(config: str, evaluations: list[str] | None = None) -> dict[str, Any]:
    """Run the evaluation entries (all, or the named ones) with existing heads."""
    started = now()
    cfg, snapshot, config_fp = prepare(config)
    known = [spec.name for spec in cfg.evaluation]
    names = evaluations or known
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"{cfg.path}: unknown evaluation {unknown[0]!r} (known: {', '.join(known) or 'none'})")
    rep = replay(cfg)
    if rep.pivot is not None and rep.pivot.manifest is None:
        raise ConfigError(f"{cfg.path}: the pivot's captions are not embedded; run `textme run` first")
    record_run(cfg, flow="textme-evaluate", status="running", config_fp=config_fp, started=started)
    t_evaluate = with_workspace(evaluate, Workspace.of(cfg))
    try:
        all_heads = {}
        futures = []
        for name in names:
            spec = cfg.evaluation_by_name(name)
            heads = heads_for(rep, spec.encoders(), cfg.training.ablate_centring)
            all_heads.update(heads)
            futures.append(t_evaluate.submit(snapshot, name, heads, rep.pivot.manifest if rep.pivot else None))
        summary = result_or_first_failure(write_results.submit(snapshot, futures, all_heads, config_fp), futures)
    except BaseException:
        record_run(cfg, flow="textme-evaluate", status="failed", config_fp=config_fp, started=started, finished=now())
        raise
    record_run(cfg, flow="textme-evaluate", status="completed", config_fp=config_fp, started=started,
               finished=now())
    return {**summary, "config_fp": config_fp, "evaluations": names}


if __name__ == "__main__":  # python -m flows.evaluate CONFIG [NAME ...]
    import sys

    evaluate_only(sys.argv[1], sys.argv[2:] or None)
