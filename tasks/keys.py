"""Stage fingerprints and the Prefect cache-key functions built from them.

Every cached stage is named by one fingerprint: `<stage>-<sha256>` over canonical JSON
of the stage name and version, the code version, the fingerprints of its inputs and its
parameters resolved *with* their defaults (a changed default is a changed key). The
flow run id is never part of a key, so a re-run of the same inputs is a cache hit.

The same function serves twice: the task's `cache_key_fn` (Prefect's record of the
result) and the task body (the names of what it writes: offsets/<fp>/,
projections/<fp>.pt, manifests/<key>.json), so Prefect's cache and ours agree. `textme
status` replays them to tell cached from missing or stale without running anything.

Prefect passes a key function the task's resolved parameters; each `*_key_fn` below
reads those by name, and raises (never returns None) when it cannot build a key.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from tasks.config import PipelineConfig, config_from_dict, config_to_dict

__all__ = [
    "CODE_VERSION",
    "STAGE_VERSIONS",
    "stage_key",
    "config_fingerprint",
    "load_snapshot",
    "encoder_ref",
    "encoder_identity",
    "encoder_of",
    "namespace_id",
    "is_stand_in",
    "train_params",
    "ingest_key",
    "embed_texts_key",
    "embed_items_key",
    "offsets_key",
    "train_inputs",
    "train_spec",
    "train_key",
    "uncentred_key",
    "released_key",
    "evaluate_key",
    "index_identity",
    "index_key",
    "HEAD_VARIANTS",
    "VARIANTS",
    "ingest_key_fn",
    "embed_texts_key_fn",
    "embed_items_key_fn",
    "offsets_key_fn",
    "train_key_fn",
    "uncentred_key_fn",
    "released_key_fn",
    "evaluate_key_fn",
    "index_key_fn",
]


def _package_version() -> str:
    try:
        return metadata.version("textme-pipeline")
    except metadata.PackageNotFoundError:
        return "0+unknown"


#: Part of every key and of every results row. Bump a stage's version below whenever
#: what it writes for the same inputs would change.
CODE_VERSION = f"textme-pipeline-{_package_version()}"
STAGE_VERSIONS = {
    "ingest": "1",
    "embed": "1",
    "embed_items": "1",
    "offsets": "1",
    "train": "1",
    "released": "1",
    "evaluate": "2",  # 2: head checks and the released variant in its manifest
    "index": "1",
}

# TrainConfig fields that pick where training runs, not what it produces.
_TRAIN_NON_OUTPUT_FIELDS = ("device",)


#: Stages whose output is computed by `textme` (the method): their keys also carry
#: textme.METHOD_VERSION, which the method layer bumps when its outputs would change.
METHOD_STAGES = ("offsets", "train", "released", "evaluate", "index")


def method_version() -> str:
    from textme import METHOD_VERSION

    return METHOD_VERSION


def stage_key(stage: str, inputs: Mapping[str, Any]) -> str:
    """`<stage>-<fingerprint>` of the stage, its version, the code version and `inputs`."""
    from storage.fingerprint import fingerprint

    if stage not in STAGE_VERSIONS:
        raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGE_VERSIONS)}")
    payload = {
        "stage": stage,
        "stage_version": STAGE_VERSIONS[stage],
        "code_version": CODE_VERSION,
        "method_version": method_version() if stage in METHOD_STAGES else None,
        "inputs": dict(inputs),
    }
    return f"{stage}-{fingerprint(payload, kind='stage')}"


def config_fingerprint(cfg: PipelineConfig) -> str:
    """Fingerprint of the resolved config (its origin path excluded: content only)."""
    from storage.fingerprint import fingerprint

    snapshot = config_to_dict(cfg)
    snapshot.pop("path", None)
    snapshot.pop("config_dir", None)
    return fingerprint(snapshot)


@lru_cache(maxsize=32)
def _load_snapshot_text(text: str) -> PipelineConfig:
    return config_from_dict(json.loads(text), source="<snapshot>")


def load_snapshot(path: str) -> PipelineConfig:
    """The resolved config a flow wrote to workdir/configs/<fp>.json (content-addressed)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"resolved config snapshot not found: {p}")
    return _load_snapshot_text(p.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- encoders


def encoder_ref(cfg: PipelineConfig, encoder: str):
    """The config entry for an encoder name, or the pivot for "pivot".

    An entry with `normalize: false` comes back with `normalize: False` among its
    options (the registry's `get_encoder` takes it for every encoder), so whoever builds
    the encoder from (ref.encoder, ref.options), here or in a worker process, builds
    the one that keeps raw outputs, and its identity (so every key) says so.
    """
    if encoder == "pivot":
        return cfg.pivot
    try:
        entry = cfg.encoders[encoder]
    except KeyError:
        raise KeyError(f"no encoder {encoder!r} in the config; known: pivot, {', '.join(cfg.encoders)}") from None
    if entry.normalize:
        return entry
    return entry.model_copy(update={"options": {**entry.options, "normalize": False}})


_ENCODERS: dict[str, Any] = {}


def build_encoder(registry_name: str, options: Mapping[str, Any]):
    """One encoder object per (name, options) per process; weights load lazily."""
    from textme.encoders import get_encoder

    memo = json.dumps([registry_name, dict(options)], sort_keys=True, default=str)
    enc = _ENCODERS.get(memo)
    if enc is None:
        enc = get_encoder(registry_name, **dict(options))
        _ENCODERS[memo] = enc
    return enc


def encoder_of(cfg: PipelineConfig, encoder: str):
    """The (memoised) encoder object of a config's encoder name or "pivot"."""
    ref = encoder_ref(cfg, encoder)
    return build_encoder(ref.encoder, ref.options)


def encoder_identity(cfg: PipelineConfig, encoder: str, tower: str) -> dict[str, Any]:
    """identity(tower) of a config's encoder; never loads weights (the contract says so)."""
    return encoder_of(cfg, encoder).identity(tower)


def is_stand_in(cfg: PipelineConfig, encoder: str) -> bool:
    """True when an encoder is a stand-in model: a toy (its identity says "stand_in"),
    a tiny model of a real class (its files sit in a folder carrying textme's tiny-model
    marker), or any model of a `demo: true` config."""
    if cfg.demo:
        return True
    ref = encoder_ref(cfg, encoder)
    enc = build_encoder(ref.encoder, ref.options)
    if any(enc.identity(t).get("stand_in") for t in enc.towers):
        return True
    from textme.encoders.tiny import MARKER

    for value in ref.options.values():
        if isinstance(value, str) and ("/" in value or "\\" in value):
            p = Path(value)
            if any((d / MARKER).is_file() for d in (p, p.parent)):
                return True
    return False


def namespace_id(identity: Mapping[str, Any]) -> str:
    """The cache namespace id of an identity (what EmbeddingCache.namespace(...).id is)."""
    from storage.fingerprint import fingerprint

    return fingerprint(dict(identity))


def train_params(cfg: PipelineConfig) -> dict[str, Any]:
    """TrainConfig resolved with its defaults (`TrainConfig(**params).to_dict()`), minus
    fields that do not change outputs. Read from the config's TrainingSpec, which restates
    TrainConfig's fields and defaults (tests/pipeline/test_config_models.py keeps the two
    equal), so that a key needs no torch."""
    spec = cfg.training
    # `params` with every field counted as given: the defaults come in, resolved.
    resolved = spec.model_construct(_fields_set=set(type(spec).model_fields), **dict(spec)).params
    for name in _TRAIN_NON_OUTPUT_FIELDS:
        resolved.pop(name, None)
    return resolved


# --------------------------------------------------------------------------- stage keys


def ingest_key(cfg: PipelineConfig, dataset: str) -> str:
    from tasks.sources import source_fingerprint

    spec = cfg.datasets[dataset]
    return stage_key(
        "ingest",
        {
            "dataset": dataset,
            "source": source_fingerprint(spec),
            "text_column": spec.text_column,
            "id_column": spec.id_column,
            "on_duplicate_id": spec.on_duplicate_id,
        },
    )


def embed_texts_key(cfg: PipelineConfig, encoder: str, tower: str, captions: list[Mapping[str, Any]]) -> str:
    return stage_key(
        "embed",
        {
            "namespace": namespace_id(encoder_identity(cfg, encoder, tower)),
            "captions": sorted(c["captions_fp"] for c in captions),
        },
    )


def embed_items_key(cfg: PipelineConfig, encoder: str) -> str:
    from tasks.inputs import sample_items

    entry = cfg.encoders[encoder]
    spec = cfg.datasets[entry.offset_dataset]
    sample = sample_items(spec.items, cfg.offsets.n_samples, cfg.offsets.seed)
    return stage_key(
        "embed_items",
        {"namespace": namespace_id(encoder_identity(cfg, encoder, "modal")), "items": sample.fingerprint,
         "on_bad_item": spec.on_bad_item},
    )


def offsets_key(
    cfg: PipelineConfig, encoder: str, text: Mapping[str, Any], modal: Mapping[str, Any], captions: Mapping[str, Any]
) -> str:
    return stage_key(
        "offsets",
        {
            "text_namespace": text["namespace"],
            "modal_namespace": modal["namespace"],
            "captions": captions["captions_fp"],
            "items": modal["items_fp"],
            "n_samples": cfg.offsets.n_samples,
            "seed": cfg.offsets.seed,
        },
    )


def train_inputs(
    cfg: PipelineConfig,
    encoder: str,
    text: Mapping[str, Any],
    pivot: Mapping[str, Any],
    captions: list[Mapping[str, Any]],
    offset: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What a head trained from scratch is made of (its key's inputs)."""
    return {
        "text_namespace": text["namespace"],
        "pivot_namespace": pivot["namespace"],
        "captions": [c["captions_fp"] for c in captions],  # order = row order in training
        "offset": None if offset is None else offset["offset_fp"],
        "train": train_params(cfg),
    }


def train_spec(
    cfg: PipelineConfig,
    encoder: str,
    text: Mapping[str, Any],
    pivot: Mapping[str, Any],
    captions: list[Mapping[str, Any]],
    offset: Mapping[str, Any] | None,
) -> tuple[str, dict[str, Any]]:
    """(key, inputs) of a train stage. With `training.warm_start`, a centred head that
    continues an earlier one (tasks/warm_start.py) adds `warm_start_from` (that head's
    key) and `warm_start_epochs` to its inputs, so warm and scratch heads never share
    a key; a scratch head's key is what it was before warm starts existed."""
    inputs = train_inputs(cfg, encoder, text, pivot, captions, offset)
    if offset is not None and cfg.training.warm_start:
        from tasks.warm_start import warm_start_source

        source = warm_start_source(cfg, encoder, inputs, stage_key("train", inputs))
        if source is not None:
            inputs = {**inputs, "warm_start_from": source, "warm_start_epochs": cfg.training.warm_start_epochs}
    return stage_key("train", inputs), inputs


def train_key(
    cfg: PipelineConfig,
    encoder: str,
    text: Mapping[str, Any],
    pivot: Mapping[str, Any],
    captions: list[Mapping[str, Any]],
    offset: Mapping[str, Any] | None,
) -> str:
    return train_spec(cfg, encoder, text, pivot, captions, offset)[0]


def uncentred_key(
    cfg: PipelineConfig,
    encoder: str,
    text: Mapping[str, Any],
    pivot: Mapping[str, Any],
    captions: list[Mapping[str, Any]],
    centred: Mapping[str, Any],
) -> str:
    """The uncentred ablation head: derived from the centred head's run when that run
    kept its twin's running mean (`derived_from` = the centred head's key), else the
    key of a head trained on raw text (heads trained before the derivation existed)."""
    if not centred.get("uncentred_running_mean"):
        return train_key(cfg, encoder, text, pivot, captions, None)
    inputs = train_inputs(cfg, encoder, text, pivot, captions, None)
    return stage_key("train", {**inputs, "derived_from": centred["projection_fp"]})


def released_key(cfg: PipelineConfig, encoder: str, offset: Mapping[str, Any] | None) -> str:
    """A released head (+ offsets): the sha256 of its files, or of the head and our
    offsets' key when `released.offset` is null; the encoder's text and modal namespaces
    (the stage checks the head's width against the encoder)."""
    from tasks.released import released_inputs

    return stage_key(
        "released",
        {
            **released_inputs(cfg, encoder),
            "own_offset": None if offset is None else offset["offset_fp"],
            "towers": {t: namespace_id(encoder_identity(cfg, encoder, t))
                       for t in encoder_of(cfg, encoder).towers if t in ("text", "modal")},
        },
    )


#: The variants that project through a head (evaluate's `heads` keys besides "offset").
HEAD_VARIANTS = ("textme", "released", "uncentred")
#: Every `variant` a results row may hold, in the order tables and plots show them.
VARIANTS = ("textme", "released", "uncentred", "native", "chance")


def evaluate_key(cfg: PipelineConfig, name: str, heads: Mapping[str, Any], pivot: Mapping[str, Any] | None) -> str:
    """Evaluation entry + its manifest's and items' content + every model it touches.

    `pivot` is None when no encoder trains (nothing embedded with the pivot's text tower)."""
    from tasks.inputs import eval_inputs_fingerprint

    spec = cfg.evaluation_by_name(name)
    towers = {}
    for enc in spec.encoders():  # a query-only encoder (e.g. precomputed text vectors) has no modal tower
        towers[enc] = {t: namespace_id(encoder_identity(cfg, enc, t))
                       for t in ("text", "modal") if t in encoder_of(cfg, enc).towers}

    def head(h: Mapping[str, Any], variant: str) -> dict[str, Any] | None:
        m = h.get(variant)
        return None if not m else {"projection": m["projection_fp"], "offset": m.get("offset_fp")}

    return stage_key(
        "evaluate",
        {
            "name": spec.name,
            "task": spec.task,
            "fields": spec.fields,
            "inputs": eval_inputs_fingerprint(spec),
            "towers": towers,
            "pivot_query": namespace_id(encoder_identity(cfg, "pivot", "query")),
            "pivot": None if pivot is None else pivot["namespace"],
            "heads": {enc: {v: head(h, v) for v in HEAD_VARIANTS} for enc, h in sorted(heads.items())},
        },
    )


def index_identity(cfg: PipelineConfig, encoder: str, head: Mapping[str, Any]) -> dict[str, Any]:
    """The cache namespace identity of an encoder's index: its modal namespace seen
    through one head and its offsets (the index vectors are a function of those alone)."""
    return {
        "index": STAGE_VERSIONS["index"],
        "method_version": method_version(),
        "modal_namespace": namespace_id(encoder_identity(cfg, encoder, "modal")),
        "projection": head["projection_fp"],
        "offset": head.get("offset_fp"),
    }


def index_key(cfg: PipelineConfig, encoder: str, head: Mapping[str, Any], modal: Mapping[str, Any] | None) -> str:
    """An encoder's index: its namespace (head + offsets + modal tower) and the corpus,
    every (item key, path) it holds (the offset sample `modal` + the evaluation items)."""
    from storage.fingerprint import fingerprint
    from tasks.index import corpus_items

    return stage_key(
        "index",
        {
            "namespace": namespace_id(index_identity(cfg, encoder, head)),
            "items": fingerprint({"items": [list(p) for p in corpus_items(cfg, encoder, modal)]}),
        },
    )


# --------------------------------------------------------------------------- Prefect adapters
# Prefect calls cache_key_fn(task_run_context, parameters); parameters are the task's
# resolved arguments by name. These stay one line each: the logic above is unit-tested.


def ingest_key_fn(_ctx: Any, p: Mapping[str, Any]) -> str:
    return ingest_key(load_snapshot(p["config"]), p["dataset"])


def embed_texts_key_fn(_ctx: Any, p: Mapping[str, Any]) -> str:
    return embed_texts_key(load_snapshot(p["config"]), p["encoder"], p["tower"], p["captions"])


def embed_items_key_fn(_ctx: Any, p: Mapping[str, Any]) -> str:
    return embed_items_key(load_snapshot(p["config"]), p["encoder"])


def offsets_key_fn(_ctx: Any, p: Mapping[str, Any]) -> str:
    return offsets_key(load_snapshot(p["config"]), p["encoder"], p["text"], p["modal"], p["captions"])


def train_key_fn(_ctx: Any, p: Mapping[str, Any]) -> str:
    return train_key(load_snapshot(p["config"]), p["encoder"], p["text"], p["pivot"], p["captions"], p["offset"])


def uncentred_key_fn(_ctx: Any, p: Mapping[str, Any]) -> str:
    return uncentred_key(load_snapshot(p["config"]), p["encoder"], p["text"], p["pivot"], p["captions"], p["centred"])


def released_key_fn(_ctx: Any, p: Mapping[str, Any]) -> str:
    return released_key(load_snapshot(p["config"]), p["encoder"], p["offset"])


def evaluate_key_fn(_ctx: Any, p: Mapping[str, Any]) -> str:
    return evaluate_key(load_snapshot(p["config"]), p["name"], p["heads"], p["pivot"])


def index_key_fn(_ctx: Any, p: Mapping[str, Any]) -> str:
    return index_key(load_snapshot(p["config"]), p["encoder"], p["head"], p["modal"])
