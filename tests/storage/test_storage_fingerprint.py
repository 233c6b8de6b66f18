"""Fingerprints: canonical form, refusals, chaining, text normalisation, file keys."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from storage.fingerprint import (
    bytes_key,
    canonical_json,
    file_key,
    fingerprint,
    is_fingerprint,
    normalize_text,
    text_key,
)

GOLDEN_OBJ = {"model": "ViT-B-32", "tower": "text", "lr": 0.0005, "layers": [1, 2.5, True, None], "name": "café"}


def test_golden_fingerprint_is_pinned():
    # A change here renames every cached thing: it must be deliberate (bump FINGERPRINT_VERSION).
    assert canonical_json(GOLDEN_OBJ) == (
        '{"layers":[1,2.5,true,null],"lr":0.0005,"model":"ViT-B-32","name":"caf\\u00e9","tower":"text"}'
    )
    assert fingerprint(GOLDEN_OBJ) == "33bf186b58d0ddce9dc95f70e64dac6665053b22ec8189debfbc1cedc0581a1d"


def test_text_key_is_sha256_of_utf8_normalised_text():
    assert text_key("hello world") == "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert text_key("  hello \n\t world ") == text_key("hello world")


def test_canonical_json_agrees_with_json_for_plain_data():
    obj = {"b": [1, 2.0, -0.0, 1e20, "x"], "a": {"z": None, "y": False}, "ü": "ßñ"}
    assert canonical_json(obj) == json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def test_key_order_does_not_matter_but_types_do():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 1.0})
    assert fingerprint({"a": 1}) != fingerprint({"a": True})
    assert fingerprint({"a": "1"}) != fingerprint({"a": 1})
    assert fingerprint([1, 2]) == fingerprint((1, 2))


def test_numpy_scalars_and_paths_are_converted():
    assert canonical_json({"n": np.int64(3), "x": np.float32(0.5), "b": np.bool_(True)}) == '{"b":true,"n":3,"x":0.5}'
    assert canonical_json({"p": Path("a") / "b"}) == canonical_json({"p": str(Path("a") / "b")})
    assert canonical_json(PurePosixPath("/x/y")) == '"/x/y"'


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), np.float64("nan")])
def test_nan_and_inf_are_refused_naming_the_field(bad):
    with pytest.raises(TypeError, match=r"config\.training\.lr"):
        canonical_json({"training": {"lr": bad}}, root="config")


@pytest.mark.parametrize(
    "value, where",
    [
        ({"a": {1, 2}}, r"value\.a\b"),
        ({"a": [0, b"raw"]}, r"value\.a\[1\]"),
        ({"a": {3: "x"}}, r"value\.a: key 3"),
        ({"a": object()}, r"value\.a\b"),
        ({"a": np.zeros(3)}, r"value\.a\b"),
    ],
)
def test_unsupported_values_raise_type_error_with_path(value, where):
    with pytest.raises(TypeError, match=where):
        fingerprint(value)


def test_fingerprint_chains_parent_and_kind():
    base = fingerprint({"x": 1})
    child = fingerprint({"y": 2}, parent=base)
    assert child != fingerprint({"y": 2})
    assert child != fingerprint({"y": 2}, parent=fingerprint({"x": 2}))
    assert fingerprint({"y": 2}, kind="train") != fingerprint({"y": 2}, kind="offsets")
    assert fingerprint({"y": 2}, parent=base, kind="k") == fingerprint({"y": 2}, parent=base, kind="k")
    assert is_fingerprint(child)


def test_parent_must_be_a_fingerprint():
    with pytest.raises(ValueError, match="parent"):
        fingerprint({}, parent="not-a-hash")


def test_same_fingerprint_in_another_python_process():
    code = "from storage.fingerprint import fingerprint; import json,sys; print(fingerprint(json.loads(sys.argv[1])))"
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(GOLDEN_OBJ)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == fingerprint(GOLDEN_OBJ)


def test_normalize_text_nfc_and_whitespace_only():
    decomposed = "cafe\u0301"  # e + combining acute accent
    assert normalize_text(decomposed) == "caf\u00e9"
    assert normalize_text(" a\u00a0\u2003b\t\nc  ") == "a b c"  # no-break and em spaces count
    assert normalize_text("A Dog.") == "A Dog."  # case and punctuation kept: encoders see them
    assert normalize_text("a\u200bb") == "a\u200bb"  # zero-width space is not whitespace
    assert text_key("A dog") != text_key("a dog")
    assert text_key(decomposed) == text_key("caf\u00e9")
    with pytest.raises(TypeError):
        normalize_text(None)


def test_file_key_streams_and_equals_bytes_key(tmp_path):
    data = np.random.default_rng(0).bytes(5 * 2**20 + 7)  # more than one read block
    path = tmp_path / "item.bin"
    path.write_bytes(data)
    assert file_key(path) == bytes_key(data) == hashlib.sha256(data).hexdigest()
    assert file_key(str(path)) == file_key(f"file://{path}")


def test_file_key_on_memory_url():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe_file("/fp-test/item.wav", b"RIFF....")
    try:
        assert file_key("memory://fp-test/item.wav") == bytes_key(b"RIFF....")
    finally:
        fs.rm("/fp-test", recursive=True)


def test_file_key_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        file_key(tmp_path / "nope.png")
