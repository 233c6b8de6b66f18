"""Released files before any run: what their keys hash, and one-line errors naming the field."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tasks.config import ConfigError, config_from_dict

SHA = "ab" * 32


def _cfg(tmp_path: Path, released: dict):
    return config_from_dict({
        "pivot": {"encoder": "toy-pivot"},
        "encoders": {"clip": {"encoder": "toy", "train": False, "released": released}},
        "datasets": {"d": {"source": str(tmp_path / "c.jsonl")}},
    }, config_dir=tmp_path)


def test_a_hub_head_is_keyed_by_its_lfs_sha256_without_a_download(tmp_path, monkeypatch):
    import huggingface_hub

    from tasks.released import released_inputs
    from textme.encoders import hub

    calls = []

    def download(repo_id, filename, *, revision=None, local_files_only=False, **kw):
        calls.append((filename, local_files_only))
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    class Meta:
        etag = f'"{SHA}"'

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, **kw: Meta())
    monkeypatch.setattr(hub, "is_offline", lambda: False)
    monkeypatch.setattr(hub, "resolve_revision", lambda repo, rev=None: "c" * 40)
    offsets = tmp_path / "off"
    offsets.mkdir()
    for name in ("text_embed_mean.pkl", "img_embed_mean.pkl"):
        (offsets / name).write_bytes(name.encode())
    cfg = _cfg(tmp_path, {"head": "hf://SoyeonHH/TextME/projections/target_encoders/clip.pt", "offset": str(offsets)})
    got = released_inputs(cfg, "clip")
    assert got["head_sha256"] == SHA
    assert got["offset"] == {"text": hashlib.sha256(b"text_embed_mean.pkl").hexdigest(),
                             "modal": hashlib.sha256(b"img_embed_mean.pkl").hexdigest()}
    assert calls == [("projections/target_encoders/clip.pt", True)]  # only a look into the cache


def test_missing_local_files_name_the_field(tmp_path):
    from tasks.released import head_file, offset_files

    cfg = _cfg(tmp_path, {"head": "heads/clip.pt", "offset": "offsets/clip_coco"})
    with pytest.raises(ConfigError, match=r"encoders.clip.released.head: released head .*heads/clip.pt not found"):
        head_file(cfg, "clip")
    with pytest.raises(ConfigError, match=r"encoders.clip.released.offset: released offset folder .*clip_coco: "
                                          r"folder not found \(expected text_embed_mean.pkl and img_embed_mean.pkl"):
        offset_files(cfg, "clip")
    (tmp_path / "offsets" / "clip_coco").mkdir(parents=True)
    (tmp_path / "offsets" / "clip_coco" / "text_embed_mean.pkl").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"clip_coco: no img_embed_mean.pkl in it"):
        offset_files(cfg, "clip")


def test_a_file_that_is_not_a_head_is_refused_before_the_run(tmp_path):
    from tasks.validate import _check_released

    (tmp_path / "heads").mkdir()
    (tmp_path / "heads" / "clip.pt").write_bytes(b"not a checkpoint")
    cfg = _cfg(tmp_path, {"head": "heads/clip.pt", "offset": "offsets"})
    with pytest.raises(ConfigError) as info:
        _check_released(cfg, assets_ready=True)
    assert "encoders.clip.released.head:" in str(info.value) and "not a readable torch checkpoint" in str(info.value)
