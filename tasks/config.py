"""The pipeline's YAML config: pydantic models, validated up front, one-line errors.

Everything a run needs is named in one file (docs/CONFIG.md). Validation happens before
anything touches the cache, so a typo costs one line on stderr, not a half-written run:
a `ConfigError` naming the file and the dotted field, e.g.
`cfg.yaml: encoders.clip.train_on: unknown dataset 'coc' (known: coco)`; an unknown field
(`extra="forbid"`) lists the fields that are known there.

`${workdir}` and `${config_dir}` are substituted in every string; path fields that are
relative are taken relative to the config file's folder. The result is *resolved*: all
paths absolute, all defaults filled in, so `config_to_dict(cfg)` is a complete, JSON-able
description that `config_from_dict` turns back into the same config (that is what tasks
receive, and what is stored with results). `config_json_schema()` is the JSON Schema of
the file as a user writes it (`textme config schema`, configs/textme.schema.json).

Adding a field: one line in its section's model below (type with constraints, default,
description), a line in docs/CONFIG.md, and regenerate the shipped schema
(`textme config schema --output configs/textme.schema.json`; a test says when it is stale).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "ConfigError",
    "EncoderRef",
    "EncoderEntry",
    "ReleasedSpec",
    "DatasetSpec",
    "EmbeddingSpec",
    "OffsetsSpec",
    "TrainingSpec",
    "IndexSpec",
    "EvalSpec",
    "BenchmarkSpec",
    "RetrievalEval",
    "ClassificationEval",
    "EmergentEval",
    "MixedSearchEval",
    "PipelineConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "config_json_schema",
    "schema_json",
    "parse_hub_source",
    "TASK_KINDS",
]

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_VAR_RE = re.compile(r"\$\{([^}]*)\}")


class ConfigError(ValueError):
    """A config problem, said in one line: file, dotted field, what is wrong."""


# --------------------------------------------------------------------------- field types


def _problem(field: str, message: str) -> PydanticCustomError:
    """A validation error at `field` (dotted, relative to the model that raises it)."""
    return PydanticCustomError("config", "{message}", {"field": field, "message": message})


def _one_error(message: str) -> WrapValidator:
    """Report any failure inside a compound value as one error on the value itself."""

    def wrap(value: Any, handler: Any) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("invalid", "{message}, got {got}",
                                      {"message": message, "got": repr(value)}) from None

    return WrapValidator(wrap)


def _yaml_float(value: Any) -> Any:
    """YAML 1.1 reads `5e-4` (no dot) as a string: take a string that parses as a float."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _resolve_path(value: str, config_dir: Path) -> str:
    if value.startswith("file://"):
        value = value[len("file://"):]
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = config_dir / p
    return os.path.normpath(str(p))


def _config_dir(info: ValidationInfo) -> Path | None:
    return (info.context or {}).get("config_dir")


def _local_path(value: str, info: ValidationInfo) -> str:
    """Relative paths are taken relative to the config's folder (when loading one)."""
    config_dir = _config_dir(info)
    return value if config_dir is None else _resolve_path(value, config_dir)


def _split_hub(source: str) -> tuple[str, str, str | None] | str:
    """('owner/repo', 'path/in/repo', revision or None), or what is wrong with `source`."""
    rest = source[len("hf://"):]
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
        if not revision:
            return f"empty revision in {source!r}"
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts):
        return f"expected hf://<owner>/<repo>/<path in repo>[@revision], got {source!r}"
    return "/".join(parts[:2]), "/".join(parts[2:]), revision


def _source(value: str, info: ValidationInfo) -> str:
    if value.startswith("hf://"):
        parsed = _split_hub(value)
        if isinstance(parsed, str):
            raise PydanticCustomError("invalid", "{message}", {"message": parsed})
        return value
    return _local_path(value, info)


# Encoder options that name local files or folders (weights, checkpoints, vector files):
# relative values resolve against the config's folder, like every other path in it.
_PATH_OPTIONS = ("path", "checkpoint", "text", "modal")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_LOCAL_DIR = "local-dir:"


def _option_paths(options: Mapping[str, Any], config_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping):  # composite: {text: {encoder: ..., options: {...}}}
            value = _option_paths(value, config_dir)
        elif isinstance(value, str) and "://" not in value and (
            key in _PATH_OPTIONS or (key == "pretrained" and value.endswith(_WEIGHT_SUFFIXES))
        ):
            value = _resolve_path(value, config_dir)
        elif key == "model" and isinstance(value, str) and value.startswith(_LOCAL_DIR):  # open_clip's folder form
            value = _LOCAL_DIR + _resolve_path(value[len(_LOCAL_DIR):], config_dir)
        out[key] = value
    return out


def _options(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    config_dir = _config_dir(info)
    return value if config_dir is None else _option_paths(value, config_dir)


def _any_case(names: tuple[str, ...]) -> str:
    """A JSON-Schema-portable regex matching any of `names` in any letter case."""
    alternatives = ("".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in n)
                    for n in names)
    return "^(?:" + "|".join(alternatives) + ")$"


def _dict_schema(schema: dict[str, Any]) -> None:
    """A mapping keyed by names: `propertyNames` (every key checked), not patternProperties."""
    pattern, value = next(iter(schema.pop("patternProperties").items()))
    schema["additionalProperties"] = value
    schema["propertyNames"] = {"pattern": pattern}


Name = Annotated[str, StringConstraints(strict=True, pattern=_NAME_PATTERN)]


def _float(**bounds: float) -> Any:
    """A float field: an int or a float-like string is taken; a bool, NaN or inf is not.

    Bounds go inside (before the string conversion) so the JSON Schema shows them."""
    return Annotated[float, Field(strict=True, allow_inf_nan=False, **bounds), BeforeValidator(_yaml_float)]


Float = _float()
LocalPath = Annotated[StrictStr, AfterValidator(_local_path)]
Source = Annotated[StrictStr, AfterValidator(_source)]
Options = Annotated[dict[str, Any], AfterValidator(_options)]
Ks = Annotated[list[Annotated[StrictInt, Field(ge=1)]], Field(min_length=1),
               AfterValidator(lambda ks: sorted(set(ks))), _one_error("expected a non-empty list of positive ints")]
Templates = Annotated[list[Annotated[StrictStr, StringConstraints(pattern=r"\{\}")]], Field(min_length=1),
                      _one_error("expected a non-empty list of strings containing '{}'")]


class _Model(BaseModel):
    """Base of every config model: frozen, and an unknown field names the known ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            known = list(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), known, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise _problem(str(key), f"unknown field (known: {', '.join(known)}){hint}")
        return data


# --------------------------------------------------------------------------- sections


def _ray_gpus(value: float | None) -> float | None:
    # Ray takes a fraction of one GPU or a whole number of them, nothing in between.
    if value is not None and value > 1 and not float(value).is_integer():
        raise PydanticCustomError("invalid", "{message}", {"message": f"expected a fraction of one GPU (0 to 1) "
                                                                      f"or a whole number of GPUs, got {value}"})
    return value


class EncoderRef(_Model):
    """A registry name plus the keyword options handed to its factory."""

    encoder: StrictStr = Field(description="Registry name: a built-in encoder or a `textme.encoders` entry point.")
    options: Options = Field(default_factory=dict, description="Keyword options of the encoder's factory.")
    num_gpus: Annotated[_float(ge=0) | None, AfterValidator(_ray_gpus)] = Field(
        None, description="GPUs each of its Ray embedding workers holds (with `--runner ray`): a fraction "
                          "(0.25: four workers share a GPU) or a whole number; 0: CPU workers. Default: 1 "
                          "when the Ray cluster has GPUs, else 0. Never changes outputs.")


class ReleasedSpec(_Model):
    """A released head (and offsets) to evaluate with, as the paper's authors published them."""

    head: Source = Field(description="Projection checkpoint (.pt): a local file or "
                                     "hf://<owner>/<repo>/<path>[@revision], e.g. "
                                     "hf://SoyeonHH/TextME/projections/target_encoders/clip.pt.")
    offset: Source | None = Field(None, description="Folder holding text_embed_mean.pkl / img_embed_mean.pkl "
                                                    "(local, or hf://SoyeonHH/TextME/offsets/clip_coco); "
                                                    "null: the pipeline's own offsets.")


class EncoderEntry(EncoderRef):
    """An encoder brought into the pivot space: which captions train its head."""

    train_on: Annotated[tuple[StrictStr, ...], _one_error("expected a non-empty list of dataset names")] = Field(
        (), description="Datasets whose captions train the head (the pivot embeds them too); "
                        "required unless train is false.")
    train: StrictBool = Field(True, description="Train a head (variant textme). false: evaluate with the "
                                                "released head only (needs released.head).")
    normalize: StrictBool = Field(True, description="Unit-normalise encoder outputs before centring (the "
                                                    "paper). false: the model's own outputs, as the official "
                                                    "wrapper centres them (raw open_clip features).")
    released: ReleasedSpec | None = Field(None, description="A released head and offsets: evaluated as "
                                                            "variant released.")
    offset_dataset: StrictStr | None = Field(
        None, validate_default=True,
        description="Dataset whose captions give mu_text and whose items give mu_modal (default: the "
                    "first of train_on; none when train is false and released.offset is given).")

    @field_validator("offset_dataset")
    @classmethod
    def _first_of_train_on(cls, value: str | None, info: ValidationInfo) -> str | None:
        released = info.data.get("released")
        if value or (info.data.get("train") is False and released is not None and released.offset):
            return value
        return (info.data.get("train_on") or (None,))[0]

    @model_validator(mode="after")
    def _what_to_evaluate(self) -> EncoderEntry:
        if self.train and not self.train_on:
            raise _problem("train_on", "required field is missing (or set train: false to use only "
                                       "released.head)")
        if not self.train and self.released is None:
            raise _problem("train", "false needs released.head (a head to evaluate with)")
        if self.offset_dataset is None and not self.has_released_offset:
            raise _problem("offset_dataset", "required when train is false and released.offset is not given "
                                             "(the offsets of the released head)")
        return self

    @property
    def has_released_offset(self) -> bool:
        return self.released is not None and self.released.offset is not None

    @property
    def own_offsets(self) -> bool:
        """Whether the pipeline computes this encoder's offsets (mu_text, mu_modal)."""
        return self.offset_dataset is not None


class DatasetSpec(_Model):
    """A caption source and (optionally) the folder of modal items used for offsets."""

    source: Source = Field(description="Local .parquet, .csv, .jsonl/.ndjson/.json file, or "
                                       "hf://<owner>/<repo>/<path>[@revision].")
    text_column: StrictStr = Field("caption", description="Column holding the captions.")
    id_column: StrictStr | None = Field(None, description="Column of caption ids (default: the row number).")
    modality: StrictStr | None = Field(None, description="A label (`textme search --modality` filters on it).")
    items: Annotated[LocalPath | None, BeforeValidator(lambda v: v or None)] = Field(
        None, description="Folder of modal item files (needed by an encoder's offset_dataset).")
    on_bad_item: Literal["fail", "skip"] = Field(
        "fail", description="An item of `items` that cannot be decoded: fail (the run stops, naming the "
                            "file) or skip (left out, counted and named in the log and embed_log).")
    on_duplicate_id: Literal["keep", "first", "fail"] = Field(
        "keep", description="Rows sharing an id with different texts: keep all (a warning names them), "
                            "first (keep the first row of each id) or fail.")

    @property
    def is_hub(self) -> bool:
        return self.source.startswith("hf://")


class EmbeddingSpec(_Model):
    """How embed stages split their work (never changes outputs, so never a cache key)."""

    shard_rows: StrictInt = Field(50000, ge=1, description="Missing inputs per shard: shards run in parallel "
                                                            "on Ray workers (one after another otherwise), "
                                                            "each committing its own segments.")


class OffsetsSpec(_Model):
    """How the centroids mu_text and mu_modal are sampled."""

    n_samples: StrictInt = Field(5000, ge=1, description="Captions and items sampled per centroid "
                                                         "(the paper: ~5K).")
    seed: StrictInt = Field(0, description="Seed of the sampling.")


class IndexSpec(_Model):
    """The `index` stage and `textme search`: when an approximate (faiss) index is used."""

    ann_min_items: StrictInt = Field(100_000, ge=1, description="An encoder's index of at least this many "
                                     "items is searched through a faiss IVF-Flat index (with faiss-cpu "
                                     "installed: the `ann` extra); smaller ones, or without faiss, exactly.")
    ann_nprobe: StrictInt = Field(32, ge=1, description="IVF lists visited per query (more: higher recall, "
                                  "slower; docs/BENCHMARKS.md, bench_search).")


# textme.training's accepted names, restated here so that loading a config never imports
# torch; tests/pipeline/test_config_models.py checks them against textme itself.
_SCHEDULES = Literal["cosine", "cosine_restarts", "constant"]
_LOSSES = Literal["hard_negative", "infonce", "mse"]
_INIT_MODES = Literal["xav", "eye", "he"]
_PRECISIONS = Literal["auto", "fp32", "bf16"]
ACTIVATIONS = ("gelu", "hardswish", "leakyrelu", "relu", "rrelu", "selu", "sigmoid", "silu", "tanh")
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "xla", "meta", "hpu", "ipu", "opengl", "opencl",
                "ideep", "hip", "ve", "fpga", "maia", "vulkan", "lazy", "mtia", "privateuseone")
_Activation = Annotated[StrictStr, StringConstraints(pattern=_any_case(ACTIVATIONS)),
                        _one_error(f"must be one of {', '.join(ACTIVATIONS)} (any case)")]
_Device = Annotated[StrictStr, StringConstraints(pattern=rf"^(?:auto|(?:{'|'.join(DEVICE_TYPES)})(?::(?:0|[1-9][0-9]*))?)$"),
                    _one_error("must be 'auto' or a torch device such as 'cpu', 'cuda:0'")]
_Beta = _float(ge=0, lt=1)


#: `training:` fields that steer the pipeline, not `textme.TrainConfig`.
PIPELINE_TRAINING_FIELDS = ("ablate_centring", "memory_budget_gb", "warm_start", "warm_start_epochs")


class TrainingSpec(_Model):
    """`textme.TrainConfig`'s fields (same names, defaults: the paper's) + PIPELINE_TRAINING_FIELDS.

    `params` holds only the fields the config gives: the train stage resolves the rest
    with TrainConfig's defaults into its key (tasks/keys.py), so a changed default is a
    changed key. The constraints here are TrainConfig's own, checked without torch.
    """

    epochs: StrictInt = Field(50, ge=1, description="Training epochs (paper: 50).")
    batch_size: StrictInt = Field(512, ge=2, description="Captions per step (paper: 512; BatchNorm needs 2).")
    lr: Float = Field(5e-4, gt=0, description="AdamW learning rate (paper: 5e-4).")
    weight_decay: Float = Field(0.01, ge=0, description="AdamW decoupled weight decay (paper: 0.01).")
    betas: Annotated[tuple[_Beta, ...], Field(min_length=2, max_length=2),
                     _one_error("expected two numbers in [0, 1)")] = Field(
        (0.9, 0.999), description="AdamW betas.")
    eps: Float = Field(1e-8, gt=0, description="AdamW epsilon.")
    schedule: _SCHEDULES = Field("cosine", description="cosine (the paper), cosine_restarts (the released "
                                                       "code) or constant.")
    warmup_steps: StrictInt = Field(0, ge=0, description="Linear warm-up steps.")
    min_lr: Float = Field(1e-6, ge=0, description="Floor of the cosine schedules.")
    restarts: StrictInt = Field(10, ge=1, description="Cycles of schedule cosine_restarts.")
    grad_clip: _float(gt=0) | None = Field(1.0, description="Max global grad norm; null: none.")
    loss: _LOSSES = Field("hard_negative", description="Training loss.")
    temperature: Float = Field(0.07, gt=0, description="Contrastive temperature tau (paper: 0.07).")
    top_perc_margin: Float = Field(0.9, description="Hard negatives have s_ij <= top * s_ii.")
    bottom_perc_margin: Float = Field(0.1, ge=0, description="... and s_ij >= bottom * s_ii (<= top).")
    max_neg: Annotated[StrictInt, Field(ge=1)] | None = Field(None, description="Cap on hard negatives per row.")
    proj_dim: Annotated[StrictInt, Field(ge=1)] | None = Field(None, description="Head hidden width "
                                                                                  "(null: 2 x input dim).")
    init_mode: _INIT_MODES = Field("xav", description="Weight init: xav (Xavier, the paper), eye or he.")
    dim_act: _Activation = Field("gelu", description="Activation between the head's two blocks.")
    seed: StrictInt = Field(0, description="Seeds head init and shuffling.")
    device: _Device = Field("auto", description="auto (cuda if available) or a torch device.")
    precision: _PRECISIONS = Field("auto", description="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16.")
    drop_last: StrictBool = Field(True, description="Drop the ragged last batch (as the official code).")
    ablate_centring: StrictBool = Field(False, description="Also evaluate the uncentred heads, derived from the "
                                                           "centred training run without a second training "
                                                           "(pipeline switch, not a TrainConfig field).")
    memory_budget_gb: _float(gt=0) | None = Field(
        None, description="Memory that training heads may hold at once, in GB (rows x dims x bytes each, "
                          "estimated before loading); a head larger than the budget runs alone. null: half of "
                          "this machine's RAM (pipeline switch, never part of a key).")
    warm_start: StrictBool = Field(False, description="Continue each head from the one a previous run trained on "
                                                      "other captions (for warm_start_epochs), not from scratch "
                                                      "(pipeline switch; warm heads have their own keys).")
    warm_start_epochs: StrictInt = Field(5, ge=1, description="Epochs a warm-started head trains "
                                                              "(training.warm_start).")

    @model_validator(mode="after")
    def _margins(self) -> TrainingSpec:
        bottom, top = self.bottom_perc_margin, self.top_perc_margin
        if bottom > top:  # named by the one the config gives (bottom when both)
            if "bottom_perc_margin" in self.model_fields_set:
                raise _problem("bottom_perc_margin", f"must be <= top_perc_margin ({top}), got {bottom}")
            raise _problem("top_perc_margin", f"must be >= bottom_perc_margin ({bottom}), got {top}")
        return self

    @model_serializer(mode="wrap")
    def _given_only(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set or k == "ablate_centring"}

    @property
    def params(self) -> dict[str, Any]:
        """The TrainConfig fields the config gives (JSON values: `TrainConfig(**params)`)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in PIPELINE_TRAINING_FIELDS}


class EvalSpec(_Model):
    """One evaluation entry, resolved; `fields` holds the task-specific, defaulted settings
    (and `metrics`). Its rows come from `manifest` or from `benchmark` (exactly one)."""

    name: str
    task: str
    manifest: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    benchmark: dict[str, Any] | None = None  # {name, root, split, items_dir, options}

    def encoders(self) -> tuple[str, ...]:
        """Encoder entries this evaluation needs heads (and modal towers) for."""
        if self.task == "emergent":
            return (self.fields["source"], self.fields["target"])
        names = [self.fields["encoder"]]
        query = self.fields.get("query", "pivot")
        if query != "pivot" and query not in names:
            names.append(query)
        return tuple(names)

    @property
    def inputs_path(self) -> str:
        """The file or folder the rows come from (the manifest, or the benchmark's root)."""
        return self.manifest if self.benchmark is None else self.benchmark["root"]

    def entry(self) -> dict[str, Any]:
        """The entry as written in a config (flat)."""
        source = {"manifest": self.manifest} if self.benchmark is None else {"benchmark": dict(self.benchmark)}
        return {"name": self.name, "task": self.task, **source, **self.fields}


class BenchmarkSpec(_Model):
    """A benchmark as distributed, read by textme.data's readers (docs/BENCHMARKS.md)."""

    name: StrictStr = Field(description="Reader name (`textme manifest --list`), e.g. flickr30k, audiocaps.")
    root: LocalPath = Field(description="The benchmark's folder as downloaded.")
    split: StrictStr | None = Field(None, description="Split (default: the reader's first, usually test).")
    items_dir: Annotated[LocalPath | None, BeforeValidator(lambda v: v or None)] = Field(
        None, description="Where readers that materialise items (ModelNet40, ScanObjectNN) write them.")
    options: dict[str, Any] = Field(default_factory=dict, description="Reader options (docs/BENCHMARKS.md).")


_METRICS = Literal["paper", "official"]


class _EvalEntry(_Model):
    """Fields every evaluation entry has; a subclass per `task` adds its own."""

    name: Name = Field(description="Unique name of the entry (results' eval_name).")
    task: str
    manifest: LocalPath | None = Field(None, description="JSONL manifest (row format in docs/CONFIG.md); "
                                                         "or give `benchmark`.")
    benchmark: BenchmarkSpec | None = Field(None, description="Read the rows from a benchmark as distributed "
                                                              "instead of a manifest.")
    metrics: _METRICS = Field("paper", description="paper: the textbook metrics (ours); official: as the "
                                                   "released code computes them (median rank, zero-shot "
                                                   "ties and class names, NDCG).")

    @model_validator(mode="after")
    def _one_source(self) -> _EvalEntry:
        if (self.manifest is None) == (self.benchmark is None):
            raise _problem("manifest", "give exactly one of manifest (a JSONL file) or benchmark "
                                       "({name, root, split})")
        return self

    def to_spec(self) -> EvalSpec:
        common = {"name", "task", "manifest", "benchmark"}
        bench = None if self.benchmark is None else self.benchmark.model_dump()
        return EvalSpec(name=self.name, task=self.task, manifest=self.manifest, benchmark=bench,
                        fields=self.model_dump(exclude=common))


_ENCODER = "An entry of `encoders`."
_QUERY = "pivot (the pivot's query tower) or an entry of `encoders` (its text tower and head)."


class RetrievalEval(_EvalEntry):
    """Text -> item retrieval over a manifest of items with captions."""

    task: Literal["retrieval"]
    encoder: StrictStr = Field(description=_ENCODER)
    query: StrictStr = Field("pivot", description=_QUERY)
    ks: Ks = Field([1, 5, 10], description="Recall@k cut-offs.")


class ClassificationEval(_EvalEntry):
    """Zero-shot classification: class names through templates."""

    task: Literal["classification"]
    encoder: StrictStr = Field(description=_ENCODER)
    query: StrictStr = Field("pivot", description=_QUERY)
    templates: Templates = Field(["a {}."], description="Prompts; '{}' is replaced by the class name.")
    ks: Ks = Field([1, 5], description="Top-k accuracies (those above the number of classes are dropped).")


class EmergentEval(_EvalEntry):
    """Item -> item retrieval between two encoders never trained together."""

    task: Literal["emergent"]
    source: StrictStr = Field(description="Encoder of the query items. " + _ENCODER)
    target: StrictStr = Field(description="Encoder of the ranked items. " + _ENCODER)
    ks: Ks = Field([1, 5, 10], description="Recall@k cut-offs.")


class MixedSearchEval(_EvalEntry):
    """Search over a corpus of text, item and text+item documents."""

    task: Literal["mixed_search"]
    encoder: StrictStr = Field(description=_ENCODER)
    query: StrictStr = Field("pivot", description=_QUERY)
    alpha: Float = Field(0.5, ge=0, le=1, description="Weight of the item side of a text+item document.")
    k: StrictInt = Field(10, ge=1, description="NDCG@k cut-off.")


# A new task kind: one more class above, added here.
_EVAL_ENTRIES = (RetrievalEval, ClassificationEval, EmergentEval, MixedSearchEval)
TASK_KINDS: tuple[str, ...] = tuple(get_args(c.model_fields["task"].annotation)[0] for c in _EVAL_ENTRIES)
Evaluation = Annotated[
    Union[_EVAL_ENTRIES],  # noqa: UP007 (a discriminated union on `task`)
    Field(discriminator="task"),
    AfterValidator(lambda entry: entry.to_spec()),
    PlainSerializer(lambda spec: spec.entry(), return_type=dict),
]


class PipelineConfig(_Model):
    """The whole config, resolved. `path` / `config_dir` say where it came from."""

    model_config = ConfigDict(title="textme pipeline config")

    name: StrictStr | None = Field(None, validate_default=True,
                                   description="Run name (default: the config file's stem).")
    workdir: LocalPath = Field(".textme", description="Cache, tables, catalog, checkpoints; may use "
                                                      "${config_dir} only.")
    cache: StrictStr | None = Field(None, validate_default=True,
                                    description="Embedding cache: a folder or an fsspec URL "
                                                "(default: ${workdir}/cache).")
    demo: StrictBool = Field(False, description="Build the offline demo's assets first; mark every "
                                                "results row stand_in.")
    pivot: EncoderRef = Field(description="The LLM embedding space everything is projected into.")
    encoders: Annotated[dict[Name, EncoderEntry], Field(min_length=1, json_schema_extra=_dict_schema)] = Field(
        description="Encoders brought into the pivot space, by name ('pivot' is reserved).")
    datasets: Annotated[dict[Name, DatasetSpec], Field(min_length=1, json_schema_extra=_dict_schema)] = Field(
        description="Caption sources (and item folders), by name.")
    embedding: EmbeddingSpec = Field(default_factory=EmbeddingSpec, description="Sharding of the embed stages.")
    offsets: OffsetsSpec = Field(default_factory=OffsetsSpec, description="Centroid sampling.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="textme.TrainConfig fields "
                                                                             "+ ablate_centring.")
    evaluation: tuple[Evaluation, ...] = Field((), description="Evaluation entries (one kind per `task`).")
    index: IndexSpec = Field(default_factory=IndexSpec, description="Search index (`textme search`).")

    _path: str = PrivateAttr("<dict>")
    _config_dir: str = PrivateAttr("")

    @property
    def path(self) -> str:
        """The config file (absolute), or where the dict came from ("<dict>")."""
        return self._path

    @property
    def config_dir(self) -> str:
        return self._config_dir

    @field_validator("name")
    @classmethod
    def _default_name(cls, value: str | None, info: ValidationInfo) -> str:
        return value or (info.context or {}).get("name", "textme")

    @field_validator("cache")
    @classmethod
    def _default_cache(cls, value: str | None, info: ValidationInfo) -> str | None:
        workdir = info.data.get("workdir")
        if value is None:
            return None if workdir is None else str(Path(workdir) / "cache")
        return value if "://" in value else _local_path(value, info)

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> PipelineConfig:
        context = info.context or {}
        self._path = context.get("path", "<dict>")
        self._config_dir = str(context.get("config_dir", ""))
        known = ", ".join(self.datasets)
        for name, entry in self.encoders.items():
            where = f"encoders.{name}"
            if name == "pivot":
                raise _problem(where, "'pivot' is reserved for the pivot encoder")
            for ds in entry.train_on:
                if ds not in self.datasets:
                    raise _problem(f"{where}.train_on", f"unknown dataset {ds!r} (known: {known})")
            if entry.offset_dataset is None:
                continue
            if entry.offset_dataset not in self.datasets:
                raise _problem(f"{where}.offset_dataset",
                               f"unknown dataset {entry.offset_dataset!r} (known: {known})")
            if self.datasets[entry.offset_dataset].items is None:
                raise _problem(f"{where}.offset_dataset", f"dataset {entry.offset_dataset!r} has no 'items' "
                                                          f"folder (needed for mu_modal)")
        encoders = ", ".join(self.encoders)
        seen: set[str] = set()
        for i, spec in enumerate(self.evaluation):
            if spec.name in seen:
                raise _problem(f"evaluation[{i}].name", f"duplicate evaluation name {spec.name!r}")
            seen.add(spec.name)
            for key in ("encoder", "source", "target", "query"):
                value = spec.fields.get(key)
                if value is not None and value not in self.encoders and not (key == "query" and value == "pivot"):
                    what = "encoder (or 'pivot')" if key == "query" else "encoder"
                    raise _problem(f"evaluation.{spec.name}.{key}", f"unknown {what} {value!r} (known: {encoders})")
        return self

    def evaluation_by_name(self, name: str) -> EvalSpec:
        for spec in self.evaluation:
            if spec.name == name:
                return spec
        raise KeyError(f"no evaluation named {name!r}; known: {[e.name for e in self.evaluation]}")


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path) -> PipelineConfig:
    """Read, substitute, resolve and validate a YAML config file."""
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise ConfigError(f"{shown}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{shown}{where}: invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not a UTF-8 text file") from None
    if data is None:
        raise ConfigError(f"{shown}: empty config")
    return config_from_dict(data, source=shown, config_dir=path.resolve().parent, path=str(path.resolve()))


def config_from_dict(
    data: Any,
    *,
    source: str = "<dict>",
    config_dir: str | Path | None = None,
    path: str | None = None,
) -> PipelineConfig:
    """Validate a plain mapping (parsed YAML, or a `config_to_dict` snapshot)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {_type_name(data)}")
    if config_dir is None:  # a config_to_dict snapshot carries its own origin
        config_dir = data.get("config_dir") if isinstance(data.get("config_dir"), str) else Path.cwd()
        if path is None and isinstance(data.get("path"), str):
            path = data["path"]
        data = {k: val for k, val in data.items() if k not in ("config_dir", "path")}
    config_dir = Path(config_dir).resolve()
    data = _substitute(data, config_dir, source)
    context = {
        "config_dir": config_dir,
        "path": path or source,
        "name": Path(path).stem if path and path != "<dict>" else "textme",
    }
    try:
        return PipelineConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_error_line(exc, source, data)) from None


def config_to_dict(cfg: PipelineConfig) -> dict[str, Any]:
    """A complete JSON-able snapshot; `config_from_dict` of it gives back `cfg`."""
    return {"path": cfg.path, "config_dir": cfg.config_dir, **cfg.model_dump(mode="json")}


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the YAML as a user writes it (before substitution and resolution).

    Draft-07, the draft editors' YAML language server validates with; it uses nothing a
    2020-12 validator reads differently."""
    schema = PipelineConfig.model_json_schema(mode="validation", ref_template="#/definitions/{model}")
    schema["definitions"] = schema.pop("$defs")
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$comment": "Generated by `textme config schema` from tasks/config.py; do not edit.",
        **schema,
        "description": "A textme pipeline config (docs/CONFIG.md). Strings may use ${workdir} and "
                       "${config_dir}; relative paths are relative to the config's folder.",
    }


def parse_hub_source(source: str) -> tuple[str, str, str | None]:
    """'hf://owner/repo/path/in/repo.parquet@rev' -> ('owner/repo', 'path/in/repo.parquet', 'rev')."""
    parsed = _split_hub(source)
    if isinstance(parsed, str):
        raise ConfigError(f"<source>: source: {parsed}")
    return parsed


# --------------------------------------------------------------------------- substitution


def _substitute(data: dict[str, Any], config_dir: Path, source: str) -> dict[str, Any]:
    """`${config_dir}` everywhere, `${workdir}` (resolved) everywhere but in workdir."""
    variables = {"config_dir": str(config_dir)}
    workdir = data.get("workdir", PipelineConfig.model_fields["workdir"].default)
    if not isinstance(workdir, str):
        return data  # the model reports the type
    workdir = _resolve_path(_subst(workdir, "workdir", variables, source), config_dir)
    variables["workdir"] = workdir
    data = _subst_tree(data, variables, source)
    return {**data, "workdir": workdir} if "workdir" in data else data


def _subst(value: str, where: str, variables: Mapping[str, str], source: str) -> str:
    def repl(m: re.Match) -> str:
        var = m.group(1)
        if var not in variables:
            known = ", ".join("${%s}" % k for k in variables)
            raise ConfigError(f"{source}: {where}: unknown variable ${{{var}}} (known: {known})")
        return variables[var]

    return _VAR_RE.sub(repl, value)


def _subst_tree(node: Any, variables: Mapping[str, str], source: str, where: str = "") -> Any:
    if isinstance(node, str):
        return _subst(node, where, variables, source)
    if isinstance(node, dict):
        return {k: _subst_tree(v, variables, source, _join(where, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [_subst_tree(v, variables, source, f"{where}[{i}]") for i, v in enumerate(node)]
    return node


# --------------------------------------------------------------------------- messages

_TYPES = {
    "int_type": "int", "int_parsing": "int", "int_from_float": "int",
    "string_type": "str", "bool_type": "bool", "bool_parsing": "bool",
    "float_type": "float", "float_parsing": "float",
    "list_type": "list", "tuple_type": "list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _error_line(exc: ValidationError, source: str, data: Any) -> str:
    """The first problem, as `<file>: <dotted.field>: <what is wrong>`."""
    errors = exc.errors(include_url=False)
    where, message = _describe(errors[0], data)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return f"{source}: {where}: {message}" if where else f"{source}: {message}"


def _describe(error: Mapping[str, Any], data: Any) -> tuple[str, str]:
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    where = _where(error["loc"], data, by_name=not kind.startswith("union_tag"))
    if kind == "config":
        return _join(where, ctx["field"]), ctx["message"]
    if kind == "missing":
        return where, "required field is missing"
    if kind == "union_tag_invalid":
        return f"{where}.task", f"expected one of {', '.join(TASK_KINDS)}, got {ctx['tag']!r}"
    if kind == "union_tag_not_found":
        return f"{where}.task", f"required field is missing (one of {', '.join(TASK_KINDS)})"
    if kind in _TYPES:
        wanted = _TYPES[kind]
        shown = _type_name(got) if wanted == "a mapping" else f"{_type_name(got)} {got!r}"
        return where, f"expected {wanted}, got {shown}"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        bound = ctx[key]
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # Float fields say "> 0", not "> 0.0"
        return where, f"must be {op} {bound}, got {got!r}"
    if kind == "literal_error":
        expected = ctx["expected"].replace("'", "").replace(" or ", ", ")
        return where, f"must be one of {expected}, got {got!r}"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == _NAME_PATTERN:
        return where, f"names may use letters, digits, '_', '.', '-' only, got {got!r}"
    if kind == "too_short":
        if ctx.get("min_length") == 1:
            return where, "must not be empty"
        return where, f"needs at least {ctx['min_length']} entries, got {ctx.get('actual_length')}"
    if kind == "finite_number":
        return where, f"must be a finite number, got {got!r}"
    return where, str(error["msg"]).removeprefix("Value error, ")


def _where(loc: tuple, data: Any, *, by_name: bool) -> str:
    """Dotted path of a pydantic location; evaluation entries by their name when valid."""
    parts: list[str] = []
    rest = list(loc)
    if len(rest) >= 2 and rest[0] == "evaluation" and isinstance(rest[1], int):
        i = rest[1]
        entries = data.get("evaluation") if isinstance(data, Mapping) else None
        entry = entries[i] if isinstance(entries, list) and i < len(entries) else None
        name = entry.get("name") if isinstance(entry, Mapping) else None
        named = by_name and isinstance(name, str) and re.match(_NAME_PATTERN, name)
        parts.append(f"evaluation.{name}" if named else f"evaluation[{i}]")
        rest = rest[3:]  # rest[2] is the union's tag (the task)
    for part in rest:
        if part == "[key]":
            continue
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", type(None): "null"}.get(type(value), type(value).__name__)


def schema_json() -> str:
    """`config_json_schema()` as the text of configs/textme.schema.json."""
    import json

    return json.dumps(config_json_schema(), indent=2, ensure_ascii=False) + "\n"
