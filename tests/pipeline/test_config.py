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
        ("training: {epochs: 2, batch_size: 8}", "training: {loss: l2}", "training.loss: must be one of"),
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


def test_paper_config_validates_offline_with_the_papers_recipe(monkeypatch):
    """configs/paper.yaml loads and validates, and every encoder entry's options are
    accepted by its factory, with no network and no weights (all load lazily)."""
    import socket

    from textme.encoders import get_encoder
    from textme.training import TrainConfig

    connect = socket.socket.connect

    def loopback_only(sock, address):  # the session's Prefect server is on loopback
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"configs/paper.yaml validation connected to {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = Path(__file__).resolve().parents[2] / "configs" / "paper.yaml"
    cfg = load_config(path)

    assert cfg.pivot.encoder == "qwen3-embedding" and cfg.pivot.options == {"model": "Qwen/Qwen3-Embedding-4B"}
    assert set(cfg.encoders) == {"clip", "remoteclip", "clap", "uni3d", "languagebind", "viclip", "cxr_clip",
                                 "moleculestm"}
    assert cfg.offsets.n_samples == 5000
    paper = {"epochs": 50, "batch_size": 512, "lr": 5e-4, "weight_decay": 0.01, "temperature": 0.07,
             "top_perc_margin": 0.9, "bottom_perc_margin": 0.1, "loss": "hard_negative"}
    assert {k: cfg.training.params[k] for k in paper} == paper
    assert TrainConfig(**cfg.training.params) == TrainConfig()  # the paper's recipe is the default

    for name, ds in cfg.datasets.items():  # the official captions, one Parquet file each
        assert parse_hub_source(ds.source) == ("SoyeonHH/textme-data", f"captions/{name}.parquet", None)
        assert (ds.text_column, ds.id_column) == ("caption", "id")
    for name, entry in cfg.encoders.items():
        enc = get_encoder(entry.encoder, **entry.options)
        assert enc.modality == cfg.datasets[entry.offset_dataset].modality, name
    assert {e.name for e in cfg.evaluation} >= {"flickr_image_retrieval", "audiocaps_retrieval",
                                                 "modelnet40_classification", "esc50_classification"}


def test_file_options_of_encoders_resolve_against_the_config_folder(tmp_path):
    text = BASE.replace(
        "    encoder: toy\n    options: {modality: image, tower_seed: 1}\n",
        "    encoder: composite\n"
        "    options:\n"
        "      text: {encoder: clip, options: {pretrained: weights/clip.pt, model: ViT-B-32}}\n"
        "      modal: {encoder: precomputed, options: {modal: vectors/img.parquet, dim: 8}}\n",
    ).replace("options: {dim: 16}}", "options: {path: ~/models/qwen, model: Qwen/Qwen3-Embedding-4B}}")
    cfg = load_config(write(tmp_path, text))
    options = cfg.encoders["img"].options
    assert options["text"]["options"] == {"pretrained": str(tmp_path / "weights" / "clip.pt"), "model": "ViT-B-32"}
    assert options["modal"]["options"]["modal"] == str(tmp_path / "vectors" / "img.parquet")
    assert cfg.pivot.options == {"path": str(Path("~/models/qwen").expanduser()), "model": "Qwen/Qwen3-Embedding-4B"}
    assert config_from_dict(config_to_dict(cfg)) == cfg  # already absolute: unchanged
