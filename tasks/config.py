"""The pipeline's YAML config, loaded into frozen dataclasses and validated up front.

Everything a run needs is named in one file (docs/CONFIG.md). Validation happens before
anything touches the cache, so a typo costs one line on stderr, not a half-written run:
an unknown or mistyped field is a `ConfigError` naming the file, the dotted field path
and the fields that are known there.

`${workdir}` and `${config_dir}` are substituted in every string; path fields that are
relative are taken relative to the config file's folder. The result is *resolved*: all
paths absolute, all defaults filled in, so `config_to_dict(cfg)` is a complete, JSON-able
description that `config_from_dict` turns back into the same config (that is what tasks
receive, and what is stored with results).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

__all__ = [
    "ConfigError",
    "EncoderRef",
    "EncoderEntry",
    "DatasetSpec",
    "OffsetsSpec",
    "TrainingSpec",
    "EvalSpec",
    "PipelineConfig",
    "load_config",
    "config_from_dict",
    "config_to_dict",
    "TASK_KINDS",
    "TRAINING_FIELDS",
]

_REQUIRED = object()
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VAR_RE = re.compile(r"\$\{([^}]*)\}")
TASK_KINDS = ("retrieval", "classification", "emergent", "mixed_search")


class ConfigError(ValueError):
    """A config problem, said in one line: file, dotted field, what is wrong."""


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class EncoderRef:
    """A registry name plus the keyword options handed to its factory."""

    encoder: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EncoderEntry(EncoderRef):
    """An encoder brought into the pivot space: which captions train its head."""

    train_on: tuple[str, ...] = ()
    offset_dataset: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A caption source and (optionally) the folder of modal items used for offsets."""

    source: str  # absolute local path, or hf://owner/repo/path[@revision]
    text_column: str = "caption"
    id_column: str | None = None
    modality: str | None = None
    items: str | None = None  # absolute folder of modal item files

    @property
    def is_hub(self) -> bool:
        return self.source.startswith("hf://")


@dataclass(frozen=True)
class OffsetsSpec:
    n_samples: int = 5000  # the paper's ~5K samples per centroid
    seed: int = 0


@dataclass(frozen=True)
class TrainingSpec:
    """`textme.TrainConfig` fields (only those given) + the centring ablation switch.

    The TrainConfig defaults are the paper's; they are resolved into the fingerprint by
    the train stage (tasks/keys.py), so a changed default is a changed key.
    """

    params: dict[str, Any] = field(default_factory=dict)
    ablate_centring: bool = False  # also train/evaluate the uncentred variant


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation entry; `fields` holds the task-specific, defaulted settings."""

    name: str
    task: str
    manifest: str
    fields: dict[str, Any] = field(default_factory=dict)

    def encoders(self) -> tuple[str, ...]:
        """Encoder entries this evaluation needs trained heads (and modal towers) for."""
        if self.task == "emergent":
            return (self.fields["source"], self.fields["target"])
        names = [self.fields["encoder"]]
        query = self.fields.get("query", "pivot")
        if query != "pivot" and query not in names:
            names.append(query)
        return tuple(names)


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    path: str  # the config file (absolute), or "<dict>"
    config_dir: str
    workdir: str
    cache: str  # local folder or fsspec URL
    demo: bool
    pivot: EncoderRef
    encoders: dict[str, EncoderEntry]
    datasets: dict[str, DatasetSpec]
    offsets: OffsetsSpec
    training: TrainingSpec
    evaluation: tuple[EvalSpec, ...]

    def evaluation_by_name(self, name: str) -> EvalSpec:
        for spec in self.evaluation:
            if spec.name == name:
                return spec
        raise KeyError(f"no evaluation named {name!r}; known: {[e.name for e in self.evaluation]}")


# --------------------------------------------------------------------------- schema

# Known fields per section: name -> (allowed types, default or _REQUIRED). Types are
# checked strictly (bool is not an int, an int is accepted where a float is asked).
_TOP = {
    "name": ((str,), None),
    "workdir": ((str,), ".textme"),
    "cache": ((str, type(None)), None),
    "demo": ((bool,), False),
    "pivot": ((dict,), _REQUIRED),
    "encoders": ((dict,), _REQUIRED),
    "datasets": ((dict,), _REQUIRED),
    "offsets": ((dict,), {}),
    "training": ((dict,), {}),
    "evaluation": ((list,), []),
}
_PIVOT = {"encoder": ((str,), _REQUIRED), "options": ((dict,), {})}
_ENCODER = {
    "encoder": ((str,), _REQUIRED),
    "options": ((dict,), {}),
    "train_on": ((list,), _REQUIRED),
    "offset_dataset": ((str, type(None)), None),
}
_DATASET = {
    "source": ((str,), _REQUIRED),
    "text_column": ((str,), "caption"),
    "id_column": ((str, type(None)), None),
    "modality": ((str, type(None)), None),
    "items": ((str, type(None)), None),
}
_OFFSETS = {"n_samples": ((int,), 5000), "seed": ((int,), 0)}

# textme.TrainConfig fields a config may set (checked against the dataclass itself when
# textme is importable; this list keeps `textme status` free of a torch import).
TRAINING_FIELDS: dict[str, tuple[type, ...]] = {
    "epochs": (int,),
    "batch_size": (int,),
    "lr": (float,),
    "weight_decay": (float,),
    "betas": (list,),
    "eps": (float,),
    "schedule": (str,),
    "warmup_steps": (int,),
    "min_lr": (float,),
    "restarts": (int,),
    "grad_clip": (float, type(None)),
    "loss": (str,),
    "temperature": (float,),
    "top_perc_margin": (float,),
    "bottom_perc_margin": (float,),
    "max_neg": (int, type(None)),
    "proj_dim": (int, type(None)),
    "init_mode": (str,),
    "dim_act": (str,),
    "seed": (int,),
    "device": (str,),
    "precision": (str,),
    "drop_last": (bool,),
}
_TRAINING_EXTRA = {"ablate_centring": ((bool,), False)}

_EVAL_COMMON = {
    "name": ((str,), _REQUIRED),
    "task": ((str,), _REQUIRED),
    "manifest": ((str,), _REQUIRED),
}
_EVAL_TASK = {
    "retrieval": {
        "encoder": ((str,), _REQUIRED),
        "query": ((str,), "pivot"),
        "ks": ((list,), [1, 5, 10]),
    },
    "classification": {
        "encoder": ((str,), _REQUIRED),
        "query": ((str,), "pivot"),
        "templates": ((list,), ["a {}."]),
        "ks": ((list,), [1, 5]),
    },
    "emergent": {
        "source": ((str,), _REQUIRED),
        "target": ((str,), _REQUIRED),
        "ks": ((list,), [1, 5, 10]),
    },
    "mixed_search": {
        "encoder": ((str,), _REQUIRED),
        "query": ((str,), "pivot"),
        "alpha": ((float,), 0.5),
        "k": ((int,), 10),
    },
}


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
    v = _Validator(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    if config_dir is None:  # a config_to_dict snapshot carries its own origin
        config_dir = data.get("config_dir") if isinstance(data.get("config_dir"), str) else Path.cwd()
        if path is None and isinstance(data.get("path"), str):
            path = data["path"]
        data = {k: val for k, val in data.items() if k not in ("config_dir", "path")}
    config_dir = Path(config_dir).resolve()
    top = v.section(data, _TOP, "")

    variables = {"config_dir": str(config_dir)}
    workdir = v.path(v.subst(top["workdir"], "workdir", variables), config_dir)
    variables["workdir"] = workdir
    data = v.subst_tree(data, variables)
    top = v.section(data, _TOP, "")
    workdir_path = Path(workdir)

    name = top["name"] or (Path(path).stem if path and path != "<dict>" else "textme")
    cache = top["cache"]
    if cache is None:
        cache = str(workdir_path / "cache")
    elif "://" not in cache:
        cache = v.path(cache, config_dir)

    pivot_raw = v.section(top["pivot"], _PIVOT, "pivot")
    pivot = EncoderRef(encoder=pivot_raw["encoder"], options=_option_paths(pivot_raw["options"], v, config_dir))

    datasets: dict[str, DatasetSpec] = {}
    for ds_name, raw in top["datasets"].items():
        where = f"datasets.{ds_name}"
        v.name(ds_name, where)
        d = v.section(raw, _DATASET, where)
        src = d["source"]
        if src.startswith("hf://"):
            _parse_hub(src, v, f"{where}.source")
        else:
            src = v.path(src, config_dir)
        items = v.path(d["items"], config_dir) if d["items"] else None
        datasets[ds_name] = DatasetSpec(
            source=src,
            text_column=d["text_column"],
            id_column=d["id_column"],
            modality=d["modality"],
            items=items,
        )
    if not datasets:
        v.fail("datasets", "at least one dataset is required")

    encoders: dict[str, EncoderEntry] = {}
    for enc_name, raw in top["encoders"].items():
        where = f"encoders.{enc_name}"
        v.name(enc_name, where)
        if enc_name == "pivot":
            v.fail(where, "'pivot' is reserved for the pivot encoder")
        e = v.section(raw, _ENCODER, where)
        train_on = tuple(v.str_list(e["train_on"], f"{where}.train_on"))
        if not train_on:
            v.fail(f"{where}.train_on", "needs at least one dataset")
        for ds in train_on:
            v.ref(ds, datasets, f"{where}.train_on", "dataset")
        offset_ds = e["offset_dataset"] or train_on[0]
        v.ref(offset_ds, datasets, f"{where}.offset_dataset", "dataset")
        if datasets[offset_ds].items is None:
            v.fail(
                f"{where}.offset_dataset",
                f"dataset {offset_ds!r} has no 'items' folder (needed for mu_modal)",
            )
        encoders[enc_name] = EncoderEntry(
            encoder=e["encoder"],
            options=_option_paths(e["options"], v, config_dir),
            train_on=train_on,
            offset_dataset=offset_ds,
        )
    if not encoders:
        v.fail("encoders", "at least one encoder is required")

    off = v.section(top["offsets"], _OFFSETS, "offsets")
    if off["n_samples"] < 1:
        v.fail("offsets.n_samples", f"must be >= 1, got {off['n_samples']}")
    offsets = OffsetsSpec(n_samples=off["n_samples"], seed=off["seed"])

    training = _training(top["training"], v)

    evaluation: list[EvalSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(top["evaluation"]):
        spec = _evaluation(raw, i, v, encoders, config_dir)
        if spec.name in seen:
            v.fail(f"evaluation[{i}].name", f"duplicate evaluation name {spec.name!r}")
        seen.add(spec.name)
        evaluation.append(spec)

    return PipelineConfig(
        name=name,
        path=path or source,
        config_dir=str(config_dir),
        workdir=workdir,
        cache=cache,
        demo=top["demo"],
        pivot=pivot,
        encoders=encoders,
        datasets=datasets,
        offsets=offsets,
        training=training,
        evaluation=tuple(evaluation),
    )


def config_to_dict(cfg: PipelineConfig) -> dict[str, Any]:
    """A complete JSON-able snapshot; `config_from_dict` of it gives back `cfg`."""
    return {
        "name": cfg.name,
        "path": cfg.path,
        "config_dir": cfg.config_dir,
        "workdir": cfg.workdir,
        "cache": cfg.cache,
        "demo": cfg.demo,
        "pivot": {"encoder": cfg.pivot.encoder, "options": dict(cfg.pivot.options)},
        "encoders": {
            n: {
                "encoder": e.encoder,
                "options": dict(e.options),
                "train_on": list(e.train_on),
                "offset_dataset": e.offset_dataset,
            }
            for n, e in cfg.encoders.items()
        },
        "datasets": {n: dataclasses.asdict(d) for n, d in cfg.datasets.items()},
        "offsets": dataclasses.asdict(cfg.offsets),
        "training": {**cfg.training.params, "ablate_centring": cfg.training.ablate_centring},
        "evaluation": [
            {"name": e.name, "task": e.task, "manifest": e.manifest, **e.fields}
            for e in cfg.evaluation
        ],
    }


def parse_hub_source(source: str) -> tuple[str, str, str | None]:
    """'hf://owner/repo/path/in/repo.parquet@rev' -> ('owner/repo', 'path/in/repo.parquet', 'rev')."""
    return _parse_hub(source, _Validator("<source>"), "source")


# --------------------------------------------------------------------------- helpers


def _parse_hub(source: str, v: "_Validator", where: str) -> tuple[str, str, str | None]:
    rest = source[len("hf://"):]
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
        if not revision:
            v.fail(where, f"empty revision in {source!r}")
    parts = rest.split("/")
    if len(parts) < 3 or not all(parts):
        v.fail(where, f"expected hf://<owner>/<repo>/<path in repo>[@revision], got {source!r}")
    return "/".join(parts[:2]), "/".join(parts[2:]), revision


def _training(raw: Any, v: "_Validator") -> TrainingSpec:
    if not isinstance(raw, dict):
        v.fail("training", f"expected a mapping, got {type(raw).__name__}")
    known = _train_config_fields()
    params: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"training.{key}"
        if key in _TRAINING_EXTRA:
            continue
        if key not in known:
            v.unknown(where, list(known) + list(_TRAINING_EXTRA))
        types = TRAINING_FIELDS.get(key)
        if types is not None:
            value = v.typed(value, types, where)
        params[key] = value
    ablate = v.typed(raw.get("ablate_centring", False), (bool,), "training.ablate_centring")
    _check_train_values(params, v)
    return TrainingSpec(params=params, ablate_centring=ablate)


# Encoder options that name local files or folders (weights, checkpoints, vector files):
# relative values resolve against the config's folder, like every other path in it.
_PATH_OPTIONS = ("path", "checkpoint", "text", "modal")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def _option_paths(options: Mapping[str, Any], v: "_Validator", config_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping):  # composite: {text: {encoder: ..., options: {...}}}
            value = _option_paths(value, v, config_dir)
        elif isinstance(value, str) and "://" not in value and (
            key in _PATH_OPTIONS or (key == "pretrained" and value.endswith(_WEIGHT_SUFFIXES))
        ):
            value = v.path(value, config_dir)
        out[key] = value
    return out


def _check_train_values(params: dict[str, Any], v: "_Validator") -> None:
    """Let TrainConfig judge the values (ranges, loss names) now, not after embedding."""
    try:
        from textme.training import TrainConfig  # noqa: PLC0415
    except Exception:
        return
    try:
        TrainConfig(**params)
    except (TypeError, ValueError) as exc:
        message = str(exc).removeprefix("TrainConfig: ")
        name = message.split(" ", 1)[0]
        if name in params:  # "batch_size must be >= 2" -> training.batch_size: must be >= 2
            v.fail(f"training.{name}", message.split(" ", 1)[1])
        v.fail("training", message)


def _train_config_fields() -> list[str]:
    """TrainConfig's own field names when textme is present, else the documented list."""
    try:
        from textme.training import TrainConfig  # noqa: PLC0415 (torch import only here)
    except Exception:  # textme not importable: validate against the documented fields
        return list(TRAINING_FIELDS)
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _evaluation(
    raw: Any, i: int, v: "_Validator", encoders: Mapping[str, EncoderEntry], config_dir: Path
) -> EvalSpec:
    where = f"evaluation[{i}]"
    if not isinstance(raw, dict):
        v.fail(where, f"expected a mapping, got {type(raw).__name__}")
    task = raw.get("task")
    if task not in TASK_KINDS:
        v.fail(f"{where}.task", f"expected one of {', '.join(TASK_KINDS)}, got {task!r}")
    schema = {**_EVAL_COMMON, **_EVAL_TASK[task]}
    name = raw.get("name")
    if isinstance(name, str):
        where = f"evaluation.{name}"
    e = v.section(raw, schema, where)
    v.name(e["name"], f"{where}.name")
    fields = {k: e[k] for k in _EVAL_TASK[task]}
    for key in ("encoder", "source", "target"):
        if key in fields:
            v.ref(fields[key], encoders, f"{where}.{key}", "encoder")
    if "query" in fields and fields["query"] != "pivot":
        v.ref(fields["query"], encoders, f"{where}.query", "encoder (or 'pivot')")
    if "ks" in fields:
        ks = fields["ks"]
        if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
            v.fail(f"{where}.ks", f"expected a non-empty list of positive ints, got {ks!r}")
        fields["ks"] = sorted(set(ks))
    if "templates" in fields:
        templates = v.str_list(fields["templates"], f"{where}.templates")
        if not templates or not all("{}" in t for t in templates):
            v.fail(f"{where}.templates", "expected a non-empty list of strings containing '{}'")
        fields["templates"] = templates
    if "alpha" in fields and not 0.0 <= fields["alpha"] <= 1.0:
        v.fail(f"{where}.alpha", f"must lie in [0, 1], got {fields['alpha']}")
    if "k" in fields and fields["k"] < 1:
        v.fail(f"{where}.k", f"must be >= 1, got {fields['k']}")
    return EvalSpec(name=e["name"], task=task, manifest=v.path(e["manifest"], config_dir), fields=fields)


class _Validator:
    """Checks one mapping against a field table; every failure names file + field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str) -> None:
        raise ConfigError(f"{self.source}: {where}: {message}" if where else f"{self.source}: {message}")

    def unknown(self, where: str, known: list[str]) -> None:
        self.fail(where, f"unknown field (known: {', '.join(known)})")

    def section(self, raw: Any, schema: Mapping[str, tuple], where: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.fail(where, f"expected a mapping, got {_type_name(raw)}")
        out: dict[str, Any] = {}
        for key in raw:
            if key not in schema:
                self.unknown(_join(where, str(key)), list(schema))
        for key, (types, default) in schema.items():
            here = _join(where, key)
            if key not in raw:
                if default is _REQUIRED:
                    self.fail(here, "required field is missing")
                out[key] = default
            else:
                out[key] = self.typed(raw[key], types, here)
        return out

    def typed(self, value: Any, types: tuple[type, ...], where: str) -> Any:
        if isinstance(value, bool) and bool not in types:
            self._wrong(value, types, where)
        if isinstance(value, types):
            return value
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if float in types and isinstance(value, str):
            try:  # YAML 1.1 reads '5e-4' (no dot) as a string
                return float(value)
            except ValueError:
                pass
        self._wrong(value, types, where)

    def _wrong(self, value: Any, types: tuple[type, ...], where: str) -> None:
        wanted = " or ".join(_type_name_t(t) for t in types)
        self.fail(where, f"expected {wanted}, got {_type_name(value)} {value!r}")

    def name(self, value: str, where: str) -> None:
        if not isinstance(value, str) or not _NAME_RE.match(value):
            self.fail(where, f"names may use letters, digits, '_', '.', '-' only, got {value!r}")

    def ref(self, value: str, known: Mapping[str, Any], where: str, what: str) -> None:
        if value not in known:
            self.fail(where, f"unknown {what} {value!r} (known: {', '.join(known) or 'none'})")

    def str_list(self, value: list, where: str) -> list[str]:
        if not all(isinstance(x, str) for x in value):
            self.fail(where, f"expected a list of strings, got {value!r}")
        return list(value)

    def path(self, value: str, config_dir: Path) -> str:
        if value.startswith("file://"):
            value = value[len("file://"):]
        p = Path(value).expanduser()
        if not p.is_absolute():
            p = config_dir / p
        return str(Path(_normpath(p)))

    def subst(self, value: str, where: str, variables: Mapping[str, str]) -> str:
        def repl(m: re.Match) -> str:
            var = m.group(1)
            if var not in variables:
                known = ", ".join("${%s}" % k for k in variables) or "none here"
                self.fail(where, f"unknown variable ${{{var}}} (known: {known})")
            return variables[var]

        return _VAR_RE.sub(repl, value)

    def subst_tree(self, node: Any, variables: Mapping[str, str], where: str = "") -> Any:
        if isinstance(node, str):
            return self.subst(node, where, variables)
        if isinstance(node, dict):
            return {k: self.subst_tree(val, variables, _join(where, str(k))) for k, val in node.items()}
        if isinstance(node, list):
            return [self.subst_tree(val, variables, f"{where}[{i}]") for i, val in enumerate(node)]
        return node


def _normpath(p: Path) -> str:
    import os

    return os.path.normpath(str(p))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", type(None): "null"}.get(type(value), type(value).__name__)


def _type_name_t(t: type) -> str:
    return {dict: "mapping", list: "list", type(None): "null"}.get(t, t.__name__)
