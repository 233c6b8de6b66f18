"""Checksums of stage outputs (tasks/integrity.py) and the cache policy that uses them,
without a flow: the fault suite (test_faults.py) runs them through real runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.cache_policy import CheckedOutputs, checked
from tasks.common import read_manifest, write_manifest
from tasks.integrity import (IntegrityError, check_file, checked_offset_dir, folder_sha256, manifest_problem,
                             sha256_file)
from tasks.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "work", str(tmp_path / "work" / "cache"))


def test_a_manifest_carries_its_own_sha256_and_an_edited_one_is_not_served(ws):
    written = write_manifest(ws, "evaluate-abc", {"stage": "evaluate", "rows": [{"value": 84.0}]})
    assert read_manifest(ws, "evaluate-abc") == written
    path = ws.manifest("evaluate-abc")
    path.write_text(path.read_text().replace("84.0", "12.34"))
    assert "does not match" in manifest_problem(json.loads(path.read_text()))
    assert read_manifest(ws, "evaluate-abc") is None  # treated as missing: its stage runs again


def test_a_manifest_without_a_checksum_is_not_trusted(ws):
    ws.manifests.mkdir(parents=True)
    ws.manifest("train-old").write_text(json.dumps({"key": "train-old", "stage": "train"}))
    assert "no manifest_sha256" in manifest_problem(json.loads(ws.manifest("train-old").read_text()))
    assert read_manifest(ws, "train-old") is None


def test_a_changed_file_is_one_line_naming_it_and_the_repair(tmp_path):
    head = tmp_path / "head.pt"
    head.write_bytes(b"weights" * 100)
    digest = sha256_file(head)
    assert check_file(head, digest, config="demo.yaml", what="stage train") == head
    data = bytearray(head.read_bytes())
    data[10] ^= 1
    head.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        check_file(head, digest, config="demo.yaml", what="stage train")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{head}: sha256 ")
    assert "`textme run demo.yaml`" in message
    head.unlink()
    with pytest.raises(IntegrityError, match="head.pt: missing"):
        check_file(head, digest, config="demo.yaml", what="stage train")


def test_an_offsets_folder_is_checked_file_by_file(tmp_path):
    folder = tmp_path / "offsets"
    folder.mkdir()
    for name in ("offset.json", "text_mean.npy"):
        (folder / name).write_bytes(name.encode())
    sums = folder_sha256(folder, ("offset.json", "text_mean.npy", "modal_mean.npy"))
    assert set(sums) == {"offset.json", "text_mean.npy"}  # only the files there
    cfg = SimpleNamespace(path="demo.yaml")
    assert checked_offset_dir(cfg, folder, sums, "clip") == folder
    (folder / "text_mean.npy").write_bytes(b"other")
    with pytest.raises(IntegrityError, match="text_mean.npy: sha256 .*stage offsets of encoder 'clip'"):
        checked_offset_dir(cfg, folder, sums, "clip")
    with pytest.raises(IntegrityError, match="no sha256 recorded"):
        checked_offset_dir(cfg, folder, None, "clip")


def test_the_policy_keeps_the_key_and_drops_a_record_whose_outputs_are_not_intact(mini_config):
    from flows.pipeline import write_snapshot
    from tasks.config import load_config
    from tasks.keys import config_fingerprint

    cfg = load_config(mini_config)
    snapshot = write_snapshot(cfg, config_fingerprint(cfg))
    ws = Workspace.of(cfg)
    policy = checked(lambda ctx, p: "ingest-abc")
    assert isinstance(policy, CheckedOutputs)
    assert policy.compute_key(None, {"config": snapshot}, {}) == "ingest-abc"  # no record: nothing to check
    record = ws.prefect_results / "ingest-abc"
    record.parent.mkdir(parents=True)
    record.write_bytes(b"not a record")
    assert policy.compute_key(None, {"config": snapshot}, {}) == "ingest-abc"
    assert not record.exists()  # not trusted: Prefect's lookup misses and the stage runs again
    with pytest.raises(ValueError, match="returned no key"):
        checked(lambda ctx, p: None).compute_key(None, {"config": snapshot}, {})
