"""Encoder option typos are refused up front: exit 2, one line naming the option, nothing written."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tasks.config import ConfigError, load_config
from tasks.validate import check_encoder_options
from textme.encoders.registry import OptionError, _factory, check_options

REPO = Path(__file__).resolve().parents[2]
TEXTME = str(Path(sys.executable).parent / "textme")


def accepted(name: str) -> list[str]:
    factory, _ = _factory(name)
    return [p for p in inspect.signature(factory).parameters]


# --------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("name, typo", [
    ("toy", "dimm"), ("toy-pivot", "nosie"), ("clip", "pretrianed"), ("open-clip", "modle"),
    ("remoteclip", "checkpoints"), ("uni3d-text", "dtyp"), ("qwen3-embedding", "max_len"),
    ("clap", "paht"), ("precomputed", "modal_keys"), ("composite", "modallity"),
])
def test_an_unknown_option_is_named_with_what_the_encoder_accepts(name, typo):
    with pytest.raises(OptionError) as info:
        check_options(name, {typo: 1})
    assert info.value.path == typo
    assert f"unknown option of encoder {name!r} (accepted: {', '.join(accepted(name))})" in info.value.reason
    assert isinstance(info.value, TypeError)  # as calling the factory with it would be


@pytest.mark.parametrize("name, options", [
    ("toy", {"modality": "audio", "dim": 8, "tower_seed": 2, "gap_norm": 1.0, "noise": 0.1, "world_seed": 0}),
    ("clip", {"model": "ViT-B-32", "pretrained": "/w/clip.pt", "device": "cpu", "batch_size": 4}),
    ("qwen3-embedding", {"model": "Qwen/Qwen3-Embedding-0.6B", "dim": 512, "instruction": "find"}),
    ("composite", {"text": {"encoder": "uni3d-text"}, "modality": "point",
                   "modal": {"encoder": "precomputed", "options": {"modal": "/v.parquet", "dim": 8}, "tower": "modal"}}),
])
def test_options_the_factory_takes_pass(name, options):
    check_options(name, options)


def test_a_factory_taking_any_keyword_takes_anything(monkeypatch):
    from textme.encoders import registry

    monkeypatch.setitem(registry._BUILTINS, "test-anything", lambda **options: None)
    check_options("test-anything", {"whatever": 1})


@pytest.mark.parametrize("options, path, reason", [
    ({"text": {"encoder": "clip", "options": {"pretraned": "x.pt"}}}, "text.options.pretraned",
     "unknown option of encoder 'clip' (accepted: model, pretrained,"),
    ({"modal": {"encoder": "precomputed", "options": {"modall": "v.parquet"}}}, "modal.options.modall",
     "unknown option of encoder 'precomputed'"),
    ({"text": {"encoder": "clip", "optoins": {}}}, "text.optoins",
     "unknown key of a composite part (accepted: encoder, options, tower)"),
    ({"text": {"options": {}}}, "text.encoder", "required field is missing"),
    ({"text": {"encoder": "clipp"}}, "text.encoder", "unknown encoder 'clipp' (known: "),
    ({"text": {"encoder": "composite", "options": {"text": {"encoder": "toy", "options": {"dimm": 3}}}}},
     "text.options.text.options.dimm", "unknown option of encoder 'toy'"),
])
def test_composite_parts_are_checked_too(options, path, reason):
    with pytest.raises(OptionError) as info:
        check_options("composite", options)
    assert info.value.path == path and reason in info.value.reason


def test_get_encoder_refuses_the_same_way():
    from textme.encoders import get_encoder

    with pytest.raises(OptionError, match=r"encoder 'toy': unknown option\(s\) dimm; accepted: modality"):
        get_encoder("toy", dimm=3)


# --------------------------------------------------------------------------- the config


def demo_copy(tmp_path: Path, edit=None) -> Path:
    """configs/demo.yaml with its workdir in tmp_path (and `edit` applied to the data)."""
    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    data["workdir"] = str(tmp_path / "work")
    for ds in data["datasets"].values():
        ds["source"] = str((REPO / "configs" / ds["source"]).resolve())
    if edit:
        edit(data)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def typo_in_toy(data):
    options = data["encoders"]["toy_image"]["options"]
    options["dimm"] = options.pop("dim")


@pytest.mark.parametrize("edit, message", [
    (typo_in_toy, "encoders.toy_image.options.dimm: unknown option of encoder 'toy' (accepted: modality, "
                  "tower_seed, dim, gap_norm, noise, world_seed, device, batch_size); did you mean 'dim'?"),
    (lambda d: d["pivot"]["options"].update(world_sed=0), "pivot.options.world_sed: unknown option of encoder "
                                                          "'toy-pivot' (accepted: dim, noise, world_seed"),
    (lambda d: d["encoders"]["tiny_clap"]["options"].update(revison="main"),
     "encoders.tiny_clap.options.revison: unknown option of encoder 'clap'"),
    (lambda d: d["encoders"]["toy_point"].update(encoder="toys"), "encoders.toy_point.encoder: unknown encoder 'toys'"),
])
def test_check_encoder_options_names_file_and_field(tmp_path, edit, message):
    path = demo_copy(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        check_encoder_options(load_config(path))
    assert str(info.value) == f"{path}: {message}" or str(info.value).startswith(f"{path}: {message}")


def test_the_shipped_configs_options_are_all_accepted():
    for name in ("demo", "paper"):
        check_encoder_options(load_config(REPO / "configs" / f"{name}.yaml"))


def test_paper_typo_in_a_composite_part(tmp_path):
    data = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    data["encoders"]["uni3d"]["options"]["modal"]["options"]["dimm"] = 1024
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"paper.yaml: encoders.uni3d.options.modal.options.dimm: unknown option "
                                          r"of encoder 'precomputed' \(accepted: text, modal, modal_key, dim"):
        check_encoder_options(load_config(path))


# --------------------------------------------------------------------------- the CLI


def test_textme_run_refuses_an_option_typo_before_writing_anything(tmp_path):
    config = demo_copy(tmp_path, typo_in_toy)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run([TEXTME, "run", str(config)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {config}: encoders.toy_image.options.dimm: unknown option of encoder 'toy' "
                     f"(accepted: modality, tower_seed, dim, gap_norm, noise, world_seed, device, batch_size); "
                     f"did you mean 'dim'?"], proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "work").exists()  # no demo assets, no cache, no tables


@pytest.mark.parametrize("command", ["status", "evaluate", "refresh"])
def test_other_commands_refuse_it_too(tmp_path, command):
    from flows.cli import app

    config = demo_copy(tmp_path, typo_in_toy)
    result = CliRunner().invoke(app, [command, str(config)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "encoders.toy_image.options.dimm: unknown option of encoder 'toy'" in result.stderr
    assert not (tmp_path / "work").exists()
