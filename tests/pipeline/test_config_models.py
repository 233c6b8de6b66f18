"""The config models against what they mirror: TrainConfig, the shipped JSON Schema, the docs.

tasks/config.py restates TrainConfig's fields and rules so that loading a config never
imports torch; these tests are what keeps the two from drifting apart.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import get_args

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from tasks.config import (
    ACTIVATIONS,
    DEVICE_TYPES,
    PIPELINE_TRAINING_FIELDS,
    ConfigError,
    EvalSpec,
    PipelineConfig,
    TrainingSpec,
    config_from_dict,
    config_json_schema,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "configs" / "textme.schema.json"

MINI = {
    "pivot": {"encoder": "toy-pivot"},
    "encoders": {"img": {"encoder": "toy", "train_on": ["caps"]}},
    "datasets": {"caps": {"source": "/data/caps.jsonl", "items": "/data/items"}},
}


def with_training(**fields) -> dict:
    return {**MINI, "training": fields}


# --------------------------------------------------------------------------- TrainConfig


def test_training_fields_and_defaults_are_train_configs():
    from textme.training import TrainConfig

    ours = {name: f.default for name, f in TrainingSpec.model_fields.items() if name not in PIPELINE_TRAINING_FIELDS}
    theirs = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert list(ours) == list(theirs)  # same names, same order (the docs' table follows it)
    assert ours == theirs
    assert TrainConfig(**config_from_dict(MINI).training.params) == TrainConfig()


def test_allowed_names_are_textmes():
    from textme import projector, training

    fields = TrainingSpec.model_fields
    assert get_args(fields["schedule"].annotation) == training._SCHEDULES
    assert get_args(fields["loss"].annotation) == training._LOSSES
    assert get_args(fields["precision"].annotation) == training._PRECISIONS
    assert get_args(fields["init_mode"].annotation) == projector._INIT_MODES
    assert ACTIVATIONS == tuple(sorted(projector._ACTIVATIONS))


@pytest.mark.parametrize("device_type", DEVICE_TYPES)
def test_every_device_type_allowed_is_a_torch_device(device_type):
    import torch

    for device in (device_type, f"{device_type}:0", f"{device_type}:3"):
        torch.device(device)  # raises for a name torch does not know
        config_from_dict(with_training(device=device))


# Per TrainConfig field, values on both sides of its rules (and the wrong case of a name).
CANDIDATES = {
    "epochs": [-1, 0, 1, 2], "batch_size": [0, 1, 2, 3], "lr": [-1e-3, 0, 1e-9, 0.1],
    "weight_decay": [-0.1, 0, 0.5], "betas": [[0.9, 0.999], [0, 0], [0.5, 1], [1.5, 0.5], [-0.1, 0.5], [0.9]],
    "eps": [-1e-8, 0, 1e-8], "schedule": ["cosine", "cosine_restarts", "constant", "Cosine", "linear"],
    "warmup_steps": [-1, 0, 5], "min_lr": [-1e-6, 0, 1e-6], "restarts": [0, 1, 3],
    "grad_clip": [None, -1, 0, 0.5], "loss": ["hard_negative", "infonce", "mse", "l2", "MSE"],
    "temperature": [-0.07, 0, 0.07], "top_perc_margin": [0.05, 0.1, 0.9, 1.5],
    "bottom_perc_margin": [-0.1, 0, 0.1, 0.9, 0.95], "max_neg": [None, -1, 0, 1, 8],
    "proj_dim": [None, 0, 1, 64], "init_mode": ["xav", "eye", "he", "kaiming"],
    "dim_act": ["gelu", "GELU", "Tanh", "relu", "swish"], "seed": [-3, 0, 7],
    "device": ["auto", "cpu", "cuda", "cuda:1", "mps", "gpu", "cuda:-1", "cuda:01", "CPU", "cpu "],
    "precision": ["auto", "fp32", "bf16", "fp16"], "drop_last": [True, False],
}


def test_every_train_config_field_has_candidates():
    from textme.training import TrainConfig

    assert set(CANDIDATES) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("field, value", [(f, v) for f, values in CANDIDATES.items() for v in values])
def test_config_refuses_exactly_what_train_config_refuses(field, value):
    """A value TrainConfig would refuse at training time is refused when the config loads
    (and one it takes is taken), without importing torch in tasks/config.py."""
    from textme.training import TrainConfig

    try:
        TrainConfig(**{field: value})
        train_config_takes = True
    except ValueError:
        train_config_takes = False
    try:
        config_from_dict(with_training(**{field: value}), source="cfg.yaml")
        config_takes = True
    except ConfigError as exc:
        assert str(exc).startswith(f"cfg.yaml: training.{field}: "), exc
        config_takes = False
    assert config_takes == train_config_takes, (field, value)


def test_loading_a_config_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; from tasks.config import load_config, config_json_schema; "
            f"load_config({str(REPO / 'configs' / 'paper.yaml')!r}); config_json_schema(); "
            "print(sorted(m for m in ('torch', 'numpy', 'textme') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- JSON Schema


@pytest.fixture(scope="module", params=["declared", "2020-12"])
def validator(request) -> jsonschema.protocols.Validator:
    """The validator its `$schema` names (draft-07, what editors' YAML language server
    uses), and a 2020-12 one (what newer tools default to): both must agree."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema) if request.param == "declared" else \
        jsonschema.Draft202012Validator
    if request.param == "declared":
        assert cls is jsonschema.Draft7Validator
    cls.check_schema(schema)
    return cls(schema)


def test_shipped_schema_is_what_the_command_prints(tmp_path):
    from flows.cli import app

    result = CliRunner().invoke(app, ["config", "schema"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stdout == SCHEMA_FILE.read_text(encoding="utf-8"), (
        "configs/textme.schema.json is stale: textme config schema --output configs/textme.schema.json")
    assert json.loads(result.stdout) == config_json_schema()
    out = tmp_path / "schema.json"
    assert CliRunner().invoke(app, ["config", "schema", "--output", str(out)]).exit_code == 0
    assert out.read_text(encoding="utf-8") == result.stdout


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_shipped_configs_validate_against_the_schema(validator, name):
    text = (REPO / "configs" / f"{name}.yaml").read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=textme.schema.json\n")  # editors find it
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(yaml.safe_load(text))]
    assert errors == []


def _demo() -> dict:
    return yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))


def _typo(how: str) -> dict:
    data = _demo()
    if how == "top-level":
        data["evalution"] = data.pop("evaluation")
    elif how == "training":
        data["training"]["epoch"] = data["training"].pop("epochs")
    elif how == "dataset":
        data["datasets"]["scenes_image"]["text_colum"] = "caption"
    elif how == "encoder entry":
        data["encoders"]["toy_image"]["train-on"] = data["encoders"]["toy_image"].pop("train_on")
    elif how == "evaluation field":
        data["evaluation"][0]["kss"] = [1, 5]
    elif how == "field of another task":
        data["evaluation"][0]["templates"] = ["a {}."]
    elif how == "task kind":
        data["evaluation"][0]["task"] = "retreival"
    elif how == "training value":
        data["training"]["loss"] = "hardnegative"
    elif how == "type":
        data["offsets"]["n_samples"] = "500"
    elif how == "name":
        data["datasets"]["scenes image"] = data["datasets"].pop("scenes_image")
    return data


TYPOS = ["top-level", "training", "dataset", "encoder entry", "evaluation field", "field of another task",
         "task kind", "training value", "type", "name"]


@pytest.mark.parametrize("how", TYPOS)
def test_a_typo_fails_schema_validation_and_loading(validator, tmp_path, how):
    data = _typo(how)
    assert not validator.is_valid(data)
    with pytest.raises(ConfigError):
        config_from_dict(data, source="demo.yaml", config_dir=REPO / "configs")


def test_schema_describes_the_file_not_the_resolved_config():
    schema = config_json_schema()
    assert "path" not in schema["properties"] and "config_dir" not in schema["properties"]
    assert schema["required"] == ["pivot", "encoders", "datasets"]
    for name, definition in schema["definitions"].items():
        assert definition.get("additionalProperties") is False, name
        for field, prop in definition["properties"].items():
            assert field == "task" or prop.get("description"), f"{name}.{field} has no description"
    kinds = schema["properties"]["evaluation"]["items"]["discriminator"]["mapping"]
    assert sorted(kinds) == ["classification", "emergent", "mixed_search", "retrieval"]


# --------------------------------------------------------------------------- docs


def test_config_docs_list_every_field():
    """docs/CONFIG.md's reference keeps step with the models: every field is named there."""
    text = (REPO / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    table = re.search(r"## training\n(.*?)\n## ", text, re.S).group(1)
    rows = re.findall(r"^\| (\w+) \| ([^|]+) \| ([^|]+) \|", table, re.M)
    assert [r[0] for r in rows if r[0] != "field"] == list(TrainingSpec.model_fields)
    example = next(b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "\nencoders:" in b)
    from tasks.config import DatasetSpec, EncoderEntry, OffsetsSpec

    for model in (PipelineConfig, EncoderEntry, DatasetSpec, OffsetsSpec):
        for field in model.model_fields:
            assert re.search(rf"^\s*{field}:", example, re.M), f"{model.__name__}.{field} not in docs/CONFIG.md"
    evaluation = text.split("## evaluation", 1)[1]
    from tasks.config import _EVAL_ENTRIES

    from tasks.config import BenchmarkSpec, ReleasedSpec, _EvalEntry

    common = set(_EvalEntry.model_fields)
    for entry in _EVAL_ENTRIES:
        kind = get_args(entry.model_fields["task"].annotation)[0]
        row = re.search(rf"^\| {kind} \|(.*)$", evaluation, re.M).group(1)
        for field in entry.model_fields:
            if field not in common:
                assert f"`{field}`" in row, f"{kind}.{field} not in docs/CONFIG.md"
    for field in common:  # every entry's fields: in the section's text
        assert f"`{field}`" in evaluation, f"evaluation entries' {field} not in docs/CONFIG.md"
    for model in (ReleasedSpec, BenchmarkSpec):  # nested blocks: named in the docs as <block>.<field>
        for field in model.model_fields:
            assert re.search(rf"\b{field}\b", text), f"{model.__name__}.{field} not in docs/CONFIG.md"


def test_eval_spec_keeps_its_plain_form():
    spec = EvalSpec(name="r", task="retrieval", manifest="/m.jsonl", fields={"encoder": "img", "query": "pivot"})
    assert spec.encoders() == ("img",)
    assert spec.entry() == {"name": "r", "task": "retrieval", "manifest": "/m.jsonl", "encoder": "img",
                            "query": "pivot"}
