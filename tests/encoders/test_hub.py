"""Weights sources: content hashes, revision resolution, and the one-line offline error."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from textme.encoders import ModelUnavailableError, get_encoder
from textme.encoders.hub import WeightsSource, parse_hf_file, resolve_revision, sha256_file, sha256_tree

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_sha256_file_is_memoised_by_size_and_mtime(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights v1")
    assert sha256_file(f) == hashlib.sha256(b"weights v1").hexdigest()
    f.write_bytes(b"weights v2")
    os.utime(f, ns=(1, 10**18))
    assert sha256_file(f) == hashlib.sha256(b"weights v2").hexdigest()


def test_sha256_tree_ignores_hidden_files_and_readmes_but_not_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "sub").mkdir(parents=True)
        (d / "config.json").write_text("{}")
        (d / "sub" / "model.safetensors").write_bytes(b"\x00\x01")
    (b / ".textme-tiny.json").write_text("marker")
    (b / "README.md").write_text("notes")
    assert sha256_tree(a) == sha256_tree(b)
    (b / "sub" / "model.safetensors").write_bytes(b"\x00\x02")
    assert sha256_tree(a) != sha256_tree(b)


def test_weights_source_local_or_hub(tmp_path):
    assert not WeightsSource.from_options("Qwen/Qwen3-Embedding-4B", None, None).is_local
    assert WeightsSource.from_options("Qwen/Qwen3-Embedding-4B", str(tmp_path), None).is_local
    assert WeightsSource.from_options(str(tmp_path), None, None).is_local
    assert WeightsSource.from_options("/no/such/folder", None, None).is_local
    ident = WeightsSource.from_options(None, str(tmp_path), None).identity()
    assert ident["model"] == "local" and len(ident["sha256"]) == 64


def test_missing_local_folder_is_one_line(tmp_path):
    enc = get_encoder("qwen3-embedding", path=str(tmp_path / "absent"), device="cpu")
    with pytest.raises(ModelUnavailableError, match=r"model folder .*absent does not exist; set `path:`"):
        enc.identity("text")


def test_resolve_revision_offline_uses_the_local_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    refs = Path(constants.HF_HUB_CACHE) / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(COMMIT)
    assert resolve_revision("org/model") == COMMIT
    assert resolve_revision("org/model", "v2") == "v2"  # unknown ref stays as written
    pinned = "f" * 40
    assert resolve_revision("org/other", pinned) == pinned
    enc = get_encoder("qwen3-embedding", model="org/model", device="cpu")
    assert enc.identity("text")["revision"] == COMMIT and enc.identity("text")["model"] == "org/model"


def test_parse_hf_file():
    assert parse_hf_file("hf://a/b/dir/w.pt@v1") == ("a/b", "dir/w.pt", "v1")
    assert parse_hf_file("hf://a/b/w.pt") == ("a/b", "w.pt", None)
    assert parse_hf_file("/local/w.pt") is None
    with pytest.raises(ValueError, match="expected hf://owner/repo/path"):
        parse_hf_file("hf://a/b")


OFFLINE_SCRIPT = textwrap.dedent('''
    import sys
    from textme.encoders import ModelUnavailableError, get_encoder
    for name in ("qwen3-embedding", "clap"):
        try:
            get_encoder(name, model=sys.argv[1], device="cpu").encode_text(["a dog"])
        except ModelUnavailableError as err:
            print(name + "\t" + str(err))
''')


def test_offline_missing_repo_gives_one_line(tmp_path):
    """A real HF_HUB_OFFLINE=1 process (the variable is read at import) and a repo that does not exist."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    repo = "no-such-org/no-such-model-xyz"
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, repo], env=env,
                          capture_output=True, text=True, timeout=120)
    errors = dict(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)
    assert set(errors) == {"qwen3-embedding", "clap"}, proc.stdout + proc.stderr
    for msg in errors.values():
        assert repo in msg and "could not be fetched" in msg and "HF_HUB_OFFLINE" in msg
        assert "`path: DIR`" in msg


def test_unreachable_hub_is_offline_for_models_too(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE, but huggingface.co does not resolve: a hub model fails at once
    with one line that says the machine cannot reach the hub and how to use a local copy."""
    import socket

    from huggingface_hub import constants

    from textme.encoders import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_host_reachable", {})

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    enc = get_encoder("qwen3-embedding", model="no-such-org/no-such-model-xyz", device="cpu")
    assert enc.identity("text")["revision"] == "main"  # not resolvable: kept as written
    with pytest.raises(ModelUnavailableError) as info:
        enc.encode_text(["a dog"])
    message = str(info.value)
    assert "\n" not in message and "this machine cannot reach huggingface.co" in message
    assert "no-such-org/no-such-model-xyz" in message and "`path: DIR`" in message
