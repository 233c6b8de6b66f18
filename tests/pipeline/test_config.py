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
    assert cfg.evaluation[0].fields == {"metrics": "paper", "encoder": "img", "query": "pivot", "ks": [1, 5, 10]}
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
         "datasets.caps.text_colum: unknown field (known: source, text_column, id_column, modality, items, on_bad_item, on_duplicate_id)"),
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
    targets = {"clip", "remoteclip", "clap", "uni3d", "viclip", "cxr_clip", "moleculestm"}
    queries = {f"languagebind_{d}" for d in ("coco", "internvid", "audiocaps", "pubchem", "objaverse", "chestxray")}
    assert set(cfg.encoders) == targets | queries
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
        # the paper's released heads and offsets, in the official layout on the hub
        released = entry.released
        assert parse_hub_source(released.head)[0] == "SoyeonHH/TextME" and released.head.endswith(".pt"), name
        assert parse_hub_source(released.offset)[1].startswith("offsets/"), name
        assert not entry.train and not entry.own_offsets, name  # nothing to train or embed for offsets
        if name in targets:  # train: true trains ours on the official captions of its modality
            assert released.head.endswith(f"target_encoders/{name}.pt")
            assert enc.modality == cfg.datasets[entry.train_on[0]].modality, name
        else:
            assert released.offset.endswith("offsets/languagebind_coco") and enc.towers == ("text",)
    assert {e.name for e in cfg.evaluation} >= {"flickr_image_retrieval", "audiocaps_retrieval",
                                                 "modelnet40_classification", "esc50_classification"}
    # the official query path: LanguageBind's text tower and the domain's released head
    for spec in cfg.evaluation:
        if spec.task != "emergent" and not spec.name.endswith("_pivot"):
            assert spec.fields["query"] in queries and spec.fields["metrics"] == "official", spec.name


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


def test_open_clip_local_dir_model_resolves_against_the_config_folder(tmp_path):
    text = BASE.replace("    encoder: toy\n    options: {modality: image, tower_seed: 1}\n",
                        "    encoder: open-clip\n    options: {model: 'local-dir:models/siglip'}\n")
    cfg = load_config(write(tmp_path, text))
    assert cfg.encoders["img"].options == {"model": f"local-dir:{tmp_path / 'models' / 'siglip'}"}
    hub = BASE.replace("    encoder: toy\n    options: {modality: image, tower_seed: 1}\n",
                       "    encoder: open-clip\n    options: {model: 'hf-hub:timm/ViT-B-16-SigLIP'}\n")
    assert load_config(write(tmp_path, hub)).encoders["img"].options == {"model": "hf-hub:timm/ViT-B-16-SigLIP"}


# --------------------------------------------------------------------------- pydantic models


@pytest.mark.parametrize(
    "old, new, message",
    [
        # type errors: strict types (a bool is not an int, a quoted number is not an int)
        ("name: t", "name: t\ndemo: 1", "demo: expected bool, got int 1"),
        ("name: t", "name: t\noffsets: {n_samples: '500'}", "offsets.n_samples: expected int, got str '500'"),
        ("name: t", "name: t\noffsets: {n_samples: true}", "offsets.n_samples: expected int, got bool True"),
        ("name: t", "name: t\noffsets: [1]", "offsets: expected a mapping, got list"),
        ("training: {epochs: 2, batch_size: 8}", "training: {lr: true}", "training.lr: expected float, got bool True"),
        ("training: {epochs: 2, batch_size: 8}", "training: {lr: .nan}", "training.lr: must be a finite number"),
        ("training: {epochs: 2, batch_size: 8}", "training: {epochs: 2.5}", "training.epochs: expected int, got float 2.5"),
        ("training: {epochs: 2, batch_size: 8}", "training: {betas: [0.9, 1.5]}",
         "training.betas: expected two numbers in [0, 1), got [0.9, 1.5]"),
        ("training: {epochs: 2, batch_size: 8}", "training: {device: gpu}", "training.device: must be 'auto' or a torch device"),
        ("training: {epochs: 2, batch_size: 8}", "training: {dim_act: swish}", "training.dim_act: must be one of gelu, "),
        ("training: {epochs: 2, batch_size: 8}", "training: {bottom_perc_margin: 0.95}",
         "training.bottom_perc_margin: must be <= top_perc_margin (0.9), got 0.95"),
        ("    train_on: [caps]", "    train_on: caps", "encoders.img.train_on: expected a non-empty list of dataset names"),
        ("    options: {modality: image, tower_seed: 1}", "    options: [modality]", "encoders.img.options: expected a mapping"),
        ("source: data/caps.jsonl", "source: hf://owner/repo", "datasets.caps.source: expected hf://<owner>/<repo>/<path"),
        ("  caps:\n", "  'caps x':\n", "datasets.caps x: names may use letters, digits, '_', '.', '-' only"),
        # nested typos: the known fields of that very section, and the closest one
        ("    train_on: [caps]", "    train-on: [caps]",
         "encoders.img.train-on: unknown field (known: encoder, options, num_gpus, train_on, train, normalize, released, "
         "offset_dataset); "
         "did you mean 'train_on'?"),
        ("pivot: {encoder: toy-pivot, options: {dim: 16}}", "pivot: {encoder: toy-pivot, option: {dim: 16}}",
         "pivot.option: unknown field (known: encoder, options, num_gpus); did you mean 'options'?"),
        ("name: t", "name: t\noffsets: {n_sample: 10}", "offsets.n_sample: unknown field (known: n_samples, seed)"),
        ("    encoder: img\n", "    encoder: img\n    kss: [1]\n",
         "evaluation.ret.kss: unknown field (known: name, task, manifest, benchmark, metrics, encoder, query, ks); did you mean 'ks'?"),
        # fields of another task kind are unknown fields of this one
        ("    encoder: img\n", "    encoder: img\n    templates: ['a {}.']\n",
         "evaluation.ret.templates: unknown field (known: name, task, manifest, benchmark, metrics, encoder, query, ks)"),
        ("    task: retrieval\n    encoder: img\n", "    task: emergent\n    encoder: img\n",
         "evaluation.ret.encoder: unknown field (known: name, task, manifest, benchmark, metrics, source, target, ks)"),
        ("    task: retrieval\n    encoder: img\n", "    task: emergent\n    source: img\n",
         "evaluation.ret.target: required field is missing"),
        ("    task: retrieval\n", "", "evaluation[0].task: required field is missing (one of retrieval, "
                                    "classification, emergent, mixed_search)"),
        ("    task: retrieval\n    encoder: img\n", "    task: mixed_search\n    encoder: img\n    alpha: 2\n",
         "evaluation.ret.alpha: must be <= 1, got 2"),
        ("    task: retrieval\n    encoder: img\n", "    task: classification\n    encoder: img\n    templates: [a]\n",
         "evaluation.ret.templates: expected a non-empty list of strings containing '{}', got ['a']"),
        ("    encoder: img\n", "    encoder: img\n    ks: [0, 5]\n",
         "evaluation.ret.ks: expected a non-empty list of positive ints, got [0, 5]"),
        ("    encoder: img\n", "    encoder: img\n    query: clip\n",
         "evaluation.ret.query: unknown encoder (or 'pivot') 'clip' (known: img)"),
        ("  img:\n", "  pivot:\n", "encoders.pivot: 'pivot' is reserved for the pivot encoder"),
        ("workdir: work", "workdir: ${workdir}/w", "workdir: unknown variable ${workdir} (known: ${config_dir})"),
        # several problems: the first, and how many more
        ("training: {epochs: 2, batch_size: 8}", "training: {epochs: 0, batch_size: 1}",
         "training.epochs: must be >= 1, got 0 (and 1 more problem)"),
    ],
)
def test_model_errors_are_one_line_with_the_dotted_field(tmp_path, old, new, message):
    assert old in BASE
    path = write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text, text
    assert message in text, text


@pytest.mark.parametrize(
    "section, yaml_key, known",
    [
        ("top", "nme: x", ["name", "workdir", "cache", "demo", "pivot", "encoders", "datasets", "embedding", "offsets",
                           "training", "evaluation", "index"]),
        ("datasets.caps", "    colour: red", ["source", "text_column", "id_column", "modality", "items", "on_bad_item",
                                               "on_duplicate_id"]),
    ],
)
def test_unknown_field_lists_every_known_field_of_its_section(tmp_path, section, yaml_key, known):
    from tasks.config import DatasetSpec, PipelineConfig

    model = {"top": PipelineConfig, "datasets.caps": DatasetSpec}[section]
    assert list(model.model_fields) == known  # the message's list is the model's
    text = BASE.replace("name: t", "name: t\n" + yaml_key) if section == "top" else \
        BASE.replace("    text_column: caption", "    text_column: caption\n" + yaml_key)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert f"unknown field (known: {', '.join(known)})" in str(info.value)


def test_training_is_every_train_config_field_but_stores_only_those_given(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.training.epochs == 2 and cfg.training.lr == 5e-4 and cfg.training.betas == (0.9, 0.999)
    assert cfg.training.params == {"epochs": 2, "batch_size": 8}
    assert config_to_dict(cfg)["training"] == {"epochs": 2, "batch_size": 8, "ablate_centring": False}


def test_values_are_normalised_as_before(tmp_path):
    """Ints in float fields become floats, ks are sorted without repeats: the stage keys and
    the config fingerprint see the same values as with the hand-written validator."""
    text = BASE.replace("{epochs: 2, batch_size: 8}", "{weight_decay: 0, betas: [0, 0.5], grad_clip: null}").replace(
        "    encoder: img\n", "    encoder: img\n    ks: [10, 1, 10]\n")
    text += "  - {name: ms, task: mixed_search, encoder: img, manifest: m.jsonl, alpha: 1}\n"
    cfg = load_config(write(tmp_path, text))
    params = cfg.training.params
    assert params == {"weight_decay": 0.0, "betas": [0.0, 0.5], "grad_clip": None}
    assert all(type(v) is float for v in (params["weight_decay"], *params["betas"]))
    assert cfg.evaluation[0].fields["ks"] == [1, 10]
    alpha = cfg.evaluation_by_name("ms").fields["alpha"]
    assert alpha == 1.0 and type(alpha) is float
    assert cfg.evaluation_by_name("ms").fields == {"metrics": "paper", "encoder": "img", "query": "pivot",
                                                   "alpha": 1.0, "k": 10}


def test_config_is_immutable_and_pickles(tmp_path):
    import pickle

    from pydantic import ValidationError

    cfg = load_config(write(tmp_path, BASE))
    for obj, field in [(cfg, "name"), (cfg.datasets["caps"], "source"), (cfg.training, "epochs"),
                       (cfg.evaluation[0], "name"), (cfg.encoders["img"], "train_on")]:
        with pytest.raises(ValidationError, match="frozen"):
            setattr(obj, field, "x")
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.path == cfg.path and again.config_dir == str(tmp_path)


def test_path_and_config_dir_are_not_config_fields(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.path == str(tmp_path / "cfg.yaml") and cfg.config_dir == str(tmp_path)
    with pytest.raises(ConfigError, match=r"cfg.yaml: path: unknown field \(known: name, workdir"):
        load_config(write(tmp_path, BASE.replace("name: t", "name: t\npath: elsewhere.yaml")))
    (tmp_path / "b").mkdir()
    assert load_config(write(tmp_path / "b", BASE.replace("workdir: work", f"workdir: {tmp_path}/work"))) != cfg
    # same content, another file: configs compare by origin too, as before


def test_dict_without_a_path_is_named_textme_and_resolves_against_the_working_dir(tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load(BASE)
    del data["name"]
    cfg = config_from_dict(data)
    assert cfg.name == "textme" and cfg.path == "<dict>" and cfg.workdir == str(tmp_path / "work")
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_shipped_configs_round_trip(name):
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml")
    assert config_from_dict(config_to_dict(cfg)) == cfg


# --------------------------------------------------------------------------- released heads

RELEASED = BASE.replace("    train_on: [caps]\n", "    train_on: [caps]\n    released: {head: heads/img.pt, offset: offsets/img_caps}\n")


def test_released_block_paths_and_hub_sources(tmp_path):
    cfg = load_config(write(tmp_path, RELEASED))
    entry = cfg.encoders["img"]
    assert entry.released.head == str(tmp_path / "heads" / "img.pt")  # relative to the config
    assert entry.released.offset == str(tmp_path / "offsets" / "img_caps")
    assert entry.train and entry.normalize and entry.offset_dataset == "caps"
    hub = load_config(write(tmp_path, RELEASED.replace(
        "{head: heads/img.pt, offset: offsets/img_caps}",
        "{head: 'hf://SoyeonHH/TextME/projections/target_encoders/clip.pt@v1', "
        "offset: 'hf://SoyeonHH/TextME/offsets/clip_coco'}")))
    assert hub.encoders["img"].released.head == "hf://SoyeonHH/TextME/projections/target_encoders/clip.pt@v1"
    assert config_from_dict(config_to_dict(hub)) == hub


def test_train_false_needs_no_training_captions_nor_offsets_of_its_own(tmp_path):
    text = RELEASED.replace("    train_on: [caps]\n", "    train: false\n    normalize: false\n")
    cfg = load_config(write(tmp_path, text))
    entry = cfg.encoders["img"]
    assert entry.train_on == () and not entry.train and not entry.normalize
    assert entry.offset_dataset is None and not entry.own_offsets  # released offsets: no item sample
    assert config_from_dict(config_to_dict(cfg)) == cfg  # the snapshot keeps the meaning
    from tasks.validate import pivot_datasets, text_datasets, used_datasets

    assert used_datasets(cfg) == [] and pivot_datasets(cfg) == [] and text_datasets(cfg, "img") == []
    # our own offsets too, when asked for; a released head without released offsets needs them
    asked = load_config(write(tmp_path, text.replace("    train: false\n", "    train: false\n    offset_dataset: caps\n")))
    assert asked.encoders["img"].own_offsets and text_datasets(asked, "img") == ["caps"]
    head_only = load_config(write(tmp_path, text.replace(", offset: offsets/img_caps", "").replace(
        "    train: false\n", "    train: false\n    offset_dataset: caps\n")))
    assert head_only.encoders["img"].released.offset is None and head_only.encoders["img"].own_offsets


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("    train_on: [caps]\n", "    train: false\n",
         "encoders.img.train: false needs released.head (a head to evaluate with)"),
        ("    train_on: [caps]\n", "",
         "encoders.img.train_on: required field is missing (or set train: false to use only released.head)"),
        ("    train_on: [caps]\n", "    train: false\n    released: {head: h.pt}\n",
         "encoders.img.offset_dataset: required when train is false and released.offset is not given"),
        ("    train_on: [caps]\n", "    train_on: [caps]\n    released: {offset: o}\n",
         "encoders.img.released.head: required field is missing"),
        ("    train_on: [caps]\n", "    train_on: [caps]\n    released: {head: 'hf://SoyeonHH/TextME'}\n",
         "encoders.img.released.head: expected hf://<owner>/<repo>/<path in repo>[@revision]"),
        ("    train_on: [caps]\n", "    train_on: [caps]\n    normalize: no-thanks\n",
         "encoders.img.normalize: expected bool"),
        ("    train_on: [caps]\n", "    train_on: [caps]\n    released: {head: h.pt, ofset: o}\n",
         "encoders.img.released.ofset: unknown field (known: head, offset); did you mean 'offset'?"),
    ],
)
def test_released_config_errors_name_the_field(tmp_path, old, new, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BASE.replace(old, new)))
    assert message in str(info.value)


# --------------------------------------------------------------------------- benchmark entries, metrics

def test_benchmark_entry_instead_of_a_manifest(tmp_path):
    text = BASE.replace("    manifest: ${config_dir}/eval/ret.jsonl\n",
                        "    benchmark: {name: flickr30k, root: data/flickr30k, split: test}\n    metrics: official\n")
    cfg = load_config(write(tmp_path, text))
    spec = cfg.evaluation[0]
    assert spec.manifest is None and spec.fields["metrics"] == "official"
    assert spec.benchmark == {"name": "flickr30k", "root": str(tmp_path / "data" / "flickr30k"), "split": "test",
                              "items_dir": None, "options": {}}
    assert spec.inputs_path == str(tmp_path / "data" / "flickr30k")
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert load_config(write(tmp_path, BASE)).evaluation[0].fields["metrics"] == "paper"  # the default


@pytest.mark.parametrize(
    "new, message",
    [
        ("    benchmark: {name: flickr30k, root: r}\n    manifest: m.jsonl\n",
         "evaluation.ret.manifest: give exactly one of manifest (a JSONL file) or benchmark"),
        ("", "evaluation.ret.manifest: give exactly one of manifest (a JSONL file) or benchmark"),
        ("    benchmark: {name: flickr30k}\n", "evaluation.ret.benchmark.root: required field is missing"),
        ("    manifest: m.jsonl\n    metrics: offical\n", "evaluation.ret.metrics: must be one of paper, official"),
    ],
)
def test_benchmark_and_metrics_errors(tmp_path, new, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BASE.replace("    manifest: ${config_dir}/eval/ret.jsonl\n", new)))
    assert message in str(info.value)
