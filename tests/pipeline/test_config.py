"""Config loading: substitution, resolution, defaults, and one-line errors naming the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tasks.config import ConfigError, config_from_dict, config_to_dict, load_config, parse_hub_source

BASE = """\
name: t
workdir: work
pivot: {encoder: toy-pivot, options: {dim: 16}}
encoders:
  img:
    encoder: toy
    options: {modality: image, tower_seed: 1}
    train_on: [caps]
datasets:
  caps:
    source: data/caps.jsonl
    text_column: caption
    items: ${workdir}/items
training: {epochs: 2, batch_size: 8}
evaluation:
  - name: ret
    task: retrieval
    encoder: img
    manifest: ${config_dir}/eval/ret.jsonl
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_resolves_paths_variables_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.workdir == str(tmp_path / "work")
    assert cfg.cache == str(tmp_path / "work" / "cache")
    assert cfg.datasets["caps"].source == str(tmp_path / "data" / "caps.jsonl")
    assert cfg.datasets["caps"].items == str(tmp_path / "work" / "items")
    assert cfg.evaluation[0].manifest == str(tmp_path / "eval" / "ret.jsonl")
    assert cfg.encoders["img"].offset_dataset == "caps"  # default: first of train_on
    assert cfg.evaluation[0].fields == {"encoder": "img", "query": "pivot", "ks": [1, 5, 10]}
    assert cfg.offsets.n_samples == 5000 and cfg.training.ablate_centring is False
    assert cfg.training.params == {"epochs": 2, "batch_size": 8}


def test_snapshot_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_hub_source_is_kept_and_parsed(tmp_path):
    cfg = load_config(write(tmp_path, BASE.replace("data/caps.jsonl", "hf://SoyeonHH/textme-data/captions/coco.parquet@v1")))
    assert cfg.datasets["caps"].source == "hf://SoyeonHH/textme-data/captions/coco.parquet@v1"
    assert parse_hub_source(cfg.datasets["caps"].source) == ("SoyeonHH/textme-data", "captions/coco.parquet", "v1")
    assert parse_hub_source("hf://o/r/a/b.parquet") == ("o/r", "a/b.parquet", None)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("    text_column: caption", "    text_colum: caption",
         "datasets.caps.text_colum: unknown field (known: source, text_column, id_column, modality, items)"),
        ("training: {epochs: 2, batch_size: 8}", "training: {epochs: two}", "training.epochs: expected int, got str 'two'"),
        ("training: {epochs: 2, batch_size: 8}", "training: {epochs: 2, batch_size: 1}", "training.batch_size: must be >= 2"),
        ("training: {epochs: 2, batch_size: 8}", "training: {epoch: 2}", "training.epoch: unknown field (known: epochs"),
        ("training: {epochs: 2, batch_size: 8}", "training: {loss: l2}", "training: unknown loss 'l2'"),
        ("    train_on: [caps]", "    train_on: [nope]", "encoders.img.train_on: unknown dataset 'nope' (known: caps)"),
        ("    encoder: img\n", "    encoder: bob\n", "evaluation.ret.encoder: unknown encoder 'bob' (known: img)"),
        ("    task: retrieval", "    task: retrieve", "evaluation[0].task: expected one of retrieval, classification"),
        ("${config_dir}/eval", "${nope}/eval", "evaluation[0].manifest: unknown variable ${nope}"),
        ("pivot: {encoder: toy-pivot, options: {dim: 16}}\n", "", "pivot: required field is missing"),
        ("    items: ${workdir}/items\n", "", "encoders.img.offset_dataset: dataset 'caps' has no 'items' folder"),
        ("name: t", "name: t\nextra: 1", "extra: unknown field (known: name, workdir"),
    ],
)
def test_errors_name_file_and_field(tmp_path, old, new, message):
    assert old in BASE
    path = write(tmp_path, BASE.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text
    assert "\n" not in text


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=r"line \d+: invalid YAML"):
        load_config(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_duplicate_evaluation_names_refused(tmp_path):
    dup = BASE + "  - {name: ret, task: retrieval, encoder: img, manifest: x.jsonl}\n"
    with pytest.raises(ConfigError, match=r"evaluation\[1\].name: duplicate evaluation name 'ret'"):
        load_config(write(tmp_path, dup))


def test_float_fields_accept_yaml_exponents_and_ints(tmp_path):
    cfg = load_config(write(tmp_path, BASE.replace("{epochs: 2, batch_size: 8}", "{lr: 5e-4, weight_decay: 0}")))
    assert cfg.training.params == {"lr": 5e-4, "weight_decay": 0.0}
