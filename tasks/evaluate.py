"""Stage 5, evaluate: one evaluation entry -> metric rows (retrieval, zero-shot
classification, emergent X->Y retrieval, mixed-modality search).

Every input (the entry's items, captions, class prompts, queries) is embedded through
the cache like everything else, so a re-evaluation runs no encoder. The stage returns
its rows in its manifest (tens of rows, small); the results stage is the one writer of
the `results` table.

Variants (the `variant` column):

- `textme`: the method. Modal items go through the encoder's head centred with their
  own centroid (mu_modal), texts through a head centred with mu_text, pivot queries
  straight from the pivot's query tower.
- `released`: the same path with an encoder's `released:` head and offsets (the
  paper's files, or anyone's in the official layout): modal items centred with the
  released mu_modal, texts (queries through an encoder) with the released mu_text.
- `uncentred`: the ablation (training.ablate_centring): heads trained on raw text
  embeddings, applied to raw modal embeddings: the modality gap stays in.
- `native`: the encoder's own text tower against its own modal tower, no pivot (the
  denominator of PPR); retrieval, classification and mixed search only.
- `chance`: what a random ranking scores (k / n), so a table shows how far above
  chance the others are.

A variant is scored when every encoder it needs has that head (`query: <encoder>`:
the query encoder's too). Before a head projects anything, its input check runs on the
exact centred inputs (textme.head_check: the first Linear's outputs against the first
BatchNorm's running statistics); a mismatch is one warning line, and every check goes
into the manifest (the results stage writes them to `head_checks`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from prefect import task

from tasks import keys
from tasks.cache_policy import checked
from tasks.common import GPU_STAGE_OPTIONS, logger, write_manifest
from tasks.config import EvalSpec, PipelineConfig
from tasks.inputs import EvalInputs, read_eval_manifest
from tasks.integrity import checked_head, checked_offset_dir
from tasks.sources import cached_file_key
from tasks.workspace import Workspace

__all__ = ["evaluate", "run_evaluation", "EvalContext", "VARIANTS", "HEAD_VARIANTS"]

VARIANTS = keys.VARIANTS
HEAD_VARIANTS = keys.HEAD_VARIANTS  # the variants that project through a head


class EvalContext:
    """Vectors for one evaluation: embedded through the cache, projected by the heads.

    heads: {encoder: {"offset": offsets manifest or None, "textme" / "released" /
    "uncentred": that head's manifest or None}} for every encoder the entry names. A
    head manifest carries the offsets it is used with (`offset_dir`, `offset_fp`).
    """

    def __init__(self, cfg: PipelineConfig, heads: dict[str, Any], stage_key: str, eval_name: str = ""):
        self.cfg = cfg
        self.heads = heads
        self.stage_key = stage_key
        self.eval_name = eval_name
        self._models: dict[tuple[str, str], Any] = {}
        self._offset_memo: dict[str, Any] = {}
        self.embedded: list[dict[str, Any]] = []  # per (encoder, tower): requested/computed
        self.head_checks: list[dict[str, Any]] = []  # per (encoder, variant, tower) projected

    # ---- embedding through the cache ---------------------------------------------
    def _vectors(self, encoder: str, tower: str, inputs: list[str], input_keys: list[str]) -> np.ndarray:
        from tasks.embed import ChunkLog, fill_cache, open_namespace

        started = time.perf_counter()
        ns, enc = open_namespace(self.cfg, encoder, tower)
        requested, computed = fill_cache(ns, enc, tower, input_keys, inputs, f"{encoder}/{tower}",
                                         log=ChunkLog(self.cfg, self.stage_key, encoder, tower, ns.id))
        self.embedded.append({"encoder": encoder, "tower": tower, "namespace": ns.id, "n_requested": requested,
                              "n_computed": computed, "seconds": time.perf_counter() - started})
        return ns.get(input_keys)

    def texts(self, encoder: str, tower: str, texts: list[str]) -> np.ndarray:
        from storage.fingerprint import normalize_text, text_key

        norm = [normalize_text(t) for t in texts]
        return self._vectors(encoder, tower, norm, [text_key(t) for t in norm])

    def items(self, encoder: str, paths: list[str]) -> np.ndarray:
        return self._vectors(encoder, "modal", list(paths), [cached_file_key(p) for p in paths])

    # ---- heads and offsets ----------------------------------------------------------
    def has_variant(self, encoder: str, variant: str) -> bool:
        return bool(self.heads.get(encoder, {}).get(variant))

    def head(self, encoder: str, variant: str):
        from textme import load_projection

        memo = (encoder, variant)
        if memo not in self._models:
            self._models[memo] = load_projection(checked_head(self.cfg, self.heads[encoder][variant]))
        return self._models[memo]

    def _offset(self, encoder: str, variant: str):
        """The offsets a variant's head is used with (None: the uncentred ablation)."""
        from textme import load_offset

        m = self.heads[encoder][variant]
        folder = m.get("offset_dir") if variant != "uncentred" else None
        if folder is None:
            return None
        if folder not in self._offset_memo:
            self._offset_memo[folder] = load_offset(checked_offset_dir(self.cfg, folder, m.get("offset_sha256"),
                                                                       encoder))
        return self._offset_memo[folder]

    def _project(self, encoder: str, raw: np.ndarray, variant: str, tower: str) -> np.ndarray:
        from textme import project

        off = self._offset(encoder, variant)
        mean = None if off is None else (off.modal_mean if tower == "modal" else off.text_mean)
        if off is not None and mean is None:
            raise ValueError(f"evaluation {self.eval_name}: the {variant} offsets of {encoder!r} have no modal "
                             f"centroid ({self.heads[encoder][variant]['offset_dir']})")
        head = self.head(encoder, variant)
        self._check(encoder, variant, tower, head, raw if mean is None else raw - mean)
        return project(head, raw, offset=mean)

    def _check(self, encoder: str, variant: str, tower: str, head: Any, centred: np.ndarray) -> None:
        """The head input check, once per (encoder, variant, tower) of this evaluation."""
        from textme.head_check import LIKELY_CAUSES, check_head_inputs

        if any((c["encoder"], c["variant"], c["tower"]) == (encoder, variant, tower) for c in self.head_checks):
            return
        m = self.heads[encoder][variant]
        result = check_head_inputs(head, centred)
        head_file = m.get("source") or m["path"]
        self.head_checks.append({
            "eval_name": self.eval_name, "encoder": encoder, "variant": variant, "tower": tower,
            "projection_fp": m["projection_fp"], "offset_fp": m.get("offset_fp") if variant != "uncentred" else None,
            "head_file": head_file, "n_rows": result.n_rows, "var_ratio": result.var_ratio,
            "mean_shift": result.mean_shift, "verdict": result.verdict,
        })
        if result.verdict == "mismatch":
            logger().warning("head check: encoder %r (%s head %s, %s inputs): the inputs do not look like what "
                             "the head was trained on: %s; likely causes: %s", encoder, variant, head_file,
                             tower, result.figure(), "; ".join(LIKELY_CAUSES))

    def project_items(self, encoder: str, raw: np.ndarray, variant: str) -> np.ndarray:
        return self._project(encoder, raw, variant, "modal")

    def project_texts(self, encoder: str, raw: np.ndarray, variant: str) -> np.ndarray:
        return self._project(encoder, raw, variant, "text")

    def queries(self, query: str, texts: list[str], variant: str) -> np.ndarray:
        """Query texts in the pivot space: the pivot's query tower, or an encoder's
        text tower through its head."""
        if query == "pivot":
            return self.texts("pivot", "query", texts)
        return self.project_texts(query, self.texts(query, "text", texts), variant)

    # ---- lineage ------------------------------------------------------------------------
    def lineage(self, variant: str, encoders: tuple[str, ...]) -> dict[str, Any]:
        """Fingerprints of the heads, offsets and caption snapshots behind a variant
        (comma-joined when several: an emergent pair has two heads). A released head's
        are `released:<file>@sha256:<hex>` (tasks/released.py)."""
        if variant not in HEAD_VARIANTS:
            return {"captions_fp": None, "offset_fp": None, "projection_fp": None, "warm_start_from": None}
        used = [self.heads[e][variant] for e in encoders if e in self.heads]
        captions = sorted({c for m in used for c in m["captions"]})
        offsets = [m["offset_fp"] for m in used if m.get("offset_fp")] if variant != "uncentred" else []
        return {
            "captions_fp": ",".join(captions) or None,
            "offset_fp": ",".join(offsets) or None,
            "projection_fp": ",".join(m["projection_fp"] for m in used) or None,
            # the heads these warm-started from (training.warm_start), "" for a scratch one
            "warm_start_from": (",".join(m.get("warm_start_from") or "" for m in used) or None
                                if any(m.get("warm_start_from") for m in used) else None),
        }


def _identity_fp(cfg: PipelineConfig, encoder: str, tower: str) -> str:
    return keys.namespace_id(keys.encoder_identity(cfg, encoder, tower))


def _stand_in(cfg: PipelineConfig, names: set[str]) -> bool:
    """True when any model involved is a stand-in (toy or tiny)."""
    return any(keys.is_stand_in(cfg, name) for name in names)


# --------------------------------------------------------------------------- the tasks


def _retrieval(ctx: EvalContext, spec: EvalSpec, data: EvalInputs, emit: Callable) -> None:
    from textme.metrics import metric_options, ppr, retrieval_metrics

    enc, query, ks = spec.fields["encoder"], spec.fields["query"], tuple(spec.fields["ks"])
    opts = metric_options(spec.fields.get("metrics", "paper"), "retrieval")
    raw_items = ctx.items(enc, data.items)
    scores: dict[str, dict[str, float]] = {}
    for variant in HEAD_VARIANTS:
        if not ctx.has_variant(enc, variant) or (query != "pivot" and not ctx.has_variant(query, variant)):
            continue
        m = retrieval_metrics(ctx.queries(query, data.captions, variant), ctx.project_items(enc, raw_items, variant),
                              data.query_item, ks, **opts)
        scores[variant] = m
        emit(variant, m, source=query, target=enc, heads=(enc,) if query == "pivot" else (enc, query))
    native = retrieval_metrics(ctx.texts(enc, "text", data.captions), raw_items, data.query_item, ks, **opts)
    emit("native", native, source=enc, target=enc, heads=())
    n_items = len(data.items)
    emit("chance", {f"R@{k}": min(100.0, 100.0 * k / n_items) for k in ks}, source=query, target=enc, heads=())
    for variant in ("textme", "released"):
        if variant in scores:
            emit(variant, {f"PPR(R@{k})": ppr(scores[variant][f"R@{k}"], native[f"R@{k}"])
                           for k in ks if native[f"R@{k}"] > 0},
                 source=query, target=enc, heads=(enc,) if query == "pivot" else (enc, query))


def _classification(ctx: EvalContext, spec: EvalSpec, data: EvalInputs, emit: Callable) -> None:
    from textme.metrics import class_embeddings, metric_options, ppr, zero_shot_accuracy

    enc, query = spec.fields["encoder"], spec.fields["query"]
    classes = sorted(set(data.labels))
    labels = np.array([classes.index(label) for label in data.labels], dtype=np.int64)
    ks = tuple(k for k in spec.fields["ks"] if k <= len(classes)) or (1,)
    templates = spec.fields["templates"]
    prompts = [t.format(c) for c in classes for t in templates]
    # classes are the distinct label strings, so "index" and "name" matching agree here;
    # the official option set still changes how exact ties are broken
    opts = {**metric_options(spec.fields.get("metrics", "paper"), "classification"), "class_names": classes}

    def grouped(vecs: np.ndarray) -> np.ndarray:
        return class_embeddings(vecs.reshape(len(classes), len(templates), -1))

    raw_items = ctx.items(enc, data.items)
    scores: dict[str, dict[str, float]] = {}
    for variant in HEAD_VARIANTS:
        if not ctx.has_variant(enc, variant) or (query != "pivot" and not ctx.has_variant(query, variant)):
            continue
        m = zero_shot_accuracy(ctx.project_items(enc, raw_items, variant), grouped(ctx.queries(query, prompts, variant)),
                               labels, ks, **opts)
        m.pop("n", None)
        scores[variant] = m
        emit(variant, m, source=query, target=enc, heads=(enc,) if query == "pivot" else (enc, query))
    native = zero_shot_accuracy(raw_items, grouped(ctx.texts(enc, "text", prompts)), labels, ks, **opts)
    native.pop("n", None)
    emit("native", native, source=enc, target=enc, heads=())
    emit("chance", {f"top{k}": 100.0 * k / len(classes) for k in ks}, source=query, target=enc, heads=())
    for variant in ("textme", "released"):
        if variant in scores:
            emit(variant, {f"PPR(top{k})": ppr(scores[variant][f"top{k}"], native[f"top{k}"])
                           for k in ks if native[f"top{k}"] > 0},
                 source=query, target=enc, heads=(enc,) if query == "pivot" else (enc, query))


def _emergent(ctx: EvalContext, spec: EvalSpec, data: EvalInputs, emit: Callable) -> None:
    from textme.metrics import metric_options, retrieval_metrics

    src, tgt, ks = spec.fields["source"], spec.fields["target"], tuple(spec.fields["ks"])
    opts = metric_options(spec.fields.get("metrics", "paper"), "retrieval")
    targets = list(dict.fromkeys(data.target_items))  # distinct targets, first-seen order
    query_item = np.array([targets.index(t) for t in data.target_items], dtype=np.int64)
    raw_src = ctx.items(src, data.source_items)
    raw_tgt = ctx.items(tgt, targets)
    for variant in HEAD_VARIANTS:
        if not (ctx.has_variant(src, variant) and ctx.has_variant(tgt, variant)):
            continue
        m = retrieval_metrics(ctx.project_items(src, raw_src, variant), ctx.project_items(tgt, raw_tgt, variant),
                              query_item, ks, **opts)
        emit(variant, m, source=src, target=tgt, heads=(src, tgt))
    emit("chance", {f"R@{k}": min(100.0, 100.0 * k / len(targets)) for k in ks}, source=src, target=tgt, heads=())


def _mixed_search(ctx: EvalContext, spec: EvalSpec, data: EvalInputs, emit: Callable) -> None:
    from textme.metrics import metric_options, mixed_modality_search

    enc, query, alpha, k = spec.fields["encoder"], spec.fields["query"], spec.fields["alpha"], spec.fields["k"]
    docs = data.docs
    modes = ["mixed" if d["text"] and d["item"] else ("text" if d["text"] else "modal") for d in docs]
    text_rows = [i for i, d in enumerate(docs) if d["text"]]
    item_rows = [i for i, d in enumerate(docs) if d["item"]]
    raw_text = ctx.texts(enc, "text", [docs[i]["text"] for i in text_rows])
    raw_items = ctx.items(enc, [docs[i]["item"] for i in item_rows])
    doc_ids = [d["doc_id"] for d in docs]
    col = {d: j for j, d in enumerate(doc_ids)}
    relevance = np.zeros((len(data.queries), len(docs)), dtype=np.float32)
    for i, q in enumerate(data.queries):
        for doc_id, grade in q["relevance"].items():
            relevance[i, col[doc_id]] = grade
    query_texts = [q["query"] for q in data.queries]

    def fill(rows: list[int], vecs: np.ndarray, dim: int) -> np.ndarray:
        out = np.zeros((len(docs), dim), dtype=np.float32)
        out[rows] = vecs
        return out

    def run(q: np.ndarray, t: np.ndarray, m: np.ndarray) -> dict[str, float]:
        dim = q.shape[1]
        res = mixed_modality_search(q, fill(text_rows, t, dim), fill(item_rows, m, dim), modes,
                                    **metric_options(spec.fields.get("metrics", "paper"), "ndcg"),
                                    alpha=alpha, k=k, relevance=relevance)
        out = {f"NDCG@{k}": res.ndcg} if res.ndcg is not None else {}
        out.update({f"share_{mode}@{k}": share for mode, share in res.mode_share.items()})
        return out

    for variant in HEAD_VARIANTS:
        if not ctx.has_variant(enc, variant) or (query != "pivot" and not ctx.has_variant(query, variant)):
            continue
        metrics = run(ctx.queries(query, query_texts, variant),
                      ctx.project_texts(enc, raw_text, variant), ctx.project_items(enc, raw_items, variant))
        emit(variant, metrics, source=query, target=enc, heads=(enc,) if query == "pivot" else (enc, query))
    # native: the encoder's own space, gap included (what GR-CLIP starts from)
    emit("native", run(ctx.texts(enc, "text", query_texts), raw_text, raw_items), source=enc, target=enc, heads=())


_TASKS = {
    "retrieval": _retrieval,
    "classification": _classification,
    "emergent": _emergent,
    "mixed_search": _mixed_search,
}


def run_evaluation(cfg: PipelineConfig, name: str, heads: dict[str, Any], pivot: dict[str, Any] | None) -> dict[str, Any]:
    """Evaluate one entry; the manifest carries its metric rows (with lineage)."""
    key = keys.evaluate_key(cfg, name, heads, pivot)
    spec = cfg.evaluation_by_name(name)
    data = read_eval_manifest(spec)
    ctx = EvalContext(cfg, heads, key, name)
    rows: list[dict[str, Any]] = []
    n_queries = {"retrieval": len(data.captions), "classification": len(data.items),
                 "emergent": len(data.source_items), "mixed_search": len(data.queries)}[spec.task]

    def emit(variant: str, metrics: dict[str, float], *, source: str, target: str, heads: tuple[str, ...]) -> None:
        source_tower = "query" if source == "pivot" else ("modal" if spec.task == "emergent" else "text")
        involved = {source, target}
        lineage = ctx.lineage(variant, heads)
        for metric, value in metrics.items():
            if metric in ("n_queries", "n_items"):  # counts: n_queries is a column of its own
                continue
            rows.append({
                "eval_name": spec.name,
                "task": spec.task,
                "dataset": data.dataset or Path(spec.inputs_path).stem,
                "variant": variant,
                "source_encoder": source,
                "target_encoder": target,
                "metric": metric,
                "value": float(value),
                "n_queries": n_queries,
                "source_identity_fp": _identity_fp(cfg, source, source_tower),
                "target_identity_fp": _identity_fp(cfg, target, "modal"),
                **lineage,
                # native rows score the encoder's own space: the pivot plays no part
                "stand_in": _stand_in(cfg, involved if variant == "native" else involved | {"pivot"}),
            })

    try:
        _TASKS[spec.task](ctx, spec, data, emit)
    except ValueError as err:  # e.g. a released head that maps into another space than the queries
        raise ValueError(f"evaluation {name!r}: {err}") from err
    computed = sum(e["n_computed"] for e in ctx.embedded)
    logger().info("evaluate %s (%s): %d metric rows; %d new vectors embedded", name, spec.task, len(rows), computed)
    manifest = {"stage": "evaluate", "name": name, "task": spec.task, "rows": rows, "embedded": ctx.embedded,
                "head_checks": ctx.head_checks}
    return write_manifest(Workspace.of(cfg), key, manifest)


@task(name="evaluate", task_run_name="evaluate-{name}", cache_policy=checked(keys.evaluate_key_fn), **GPU_STAGE_OPTIONS)
def evaluate(config: str, name: str, heads: dict[str, Any], pivot: dict[str, Any] | None) -> dict[str, Any]:
    """Prefect task: `heads` maps each encoder the entry needs to its offsets and head
    manifests (train, released); `pivot` is the pivot's embed manifest (lineage), None
    when no encoder trains."""
    return run_evaluation(keys.load_snapshot(config), name, heads, pivot)
