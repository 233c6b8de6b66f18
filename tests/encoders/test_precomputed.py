"""The precomputed encoder: npy / Parquet / Zarr files, key checks and dimension checks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from textme.encoders import EncoderInputError, get_encoder
from textme.encoders.hub import sha256_file

CAPTIONS = ["a dog", "a cat on a sofa", "rain\non a roof", "a car"]


def _vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write_npy(path, keys, vecs, sidecar="json"):
    np.save(path, vecs)
    if sidecar == "json":
        path.with_suffix(".keys.json").write_text(json.dumps(keys))
    else:
        path.with_suffix(".keys.txt").write_text("\n".join(keys) + "\n")


def write_parquet(path, keys, vecs, key_col="key", vec_col="vector"):
    pq.write_table(pa.table({key_col: keys, vec_col: [list(map(float, v)) for v in vecs]}), path)


def write_zarr(path, keys, vecs):
    import zarr

    group = zarr.open_group(str(path), mode="w")
    group.create_array("vectors", data=vecs)
    arr = group.create_array("keys", shape=(len(keys),), dtype=str)  # variable-length UTF-8
    arr[:] = np.asarray(keys, dtype=object)


@pytest.mark.parametrize("fmt", ["npy-json", "parquet", "zarr"])
def test_text_vectors_in_every_format(tmp_path, fmt):
    vecs = _vectors(len(CAPTIONS), 8)
    if fmt == "npy-json":
        path = tmp_path / "text.npy"
        write_npy(path, CAPTIONS, vecs)
    elif fmt == "parquet":
        path = tmp_path / "text.parquet"
        write_parquet(path, CAPTIONS, vecs, key_col="text", vec_col="embedding")
    else:
        path = tmp_path / "text.zarr"
        write_zarr(path, CAPTIONS, vecs)
    enc = get_encoder("precomputed", text=str(path), dim=8)
    assert enc.towers == ("text",) and enc.dim == 8
    order = [3, 0, 2]
    got = enc.encode_text([CAPTIONS[i] for i in order])
    np.testing.assert_allclose(got, _unit(vecs[order]), atol=1e-6)
    assert enc.identity("text")["key"] == "text"


def test_modal_vectors_by_item_id(tmp_path):
    ids = ["000001", "000002", "000003"]
    vecs = _vectors(3, 6, seed=1)
    write_npy(tmp_path / "points.npy", ids, vecs, sidecar="txt")
    enc = get_encoder("precomputed", modal=str(tmp_path / "points.npy"), modality="point")
    got = enc.encode_modal(["/data/clouds/000003.npy", "/elsewhere/000001.npy"])
    np.testing.assert_allclose(got, _unit(vecs[[2, 0]]), atol=1e-6)
    assert enc.modality == "point" and enc.towers == ("modal",)


def test_modal_key_sha256(tmp_path):
    items = []
    for i in range(2):
        p = tmp_path / f"item{i}.bin"
        p.write_bytes(f"item {i}".encode())
        items.append(str(p))
    vecs = _vectors(2, 4)
    write_parquet(tmp_path / "modal.parquet", [sha256_file(p) for p in items], vecs)
    enc = get_encoder("precomputed", modal=str(tmp_path / "modal.parquet"), modal_key="sha256")
    np.testing.assert_allclose(enc.encode_modal(items[::-1]), _unit(vecs[::-1]), atol=1e-6)


def test_refuses_missing_keys_listing_count_and_first(tmp_path):
    write_npy(tmp_path / "text.npy", CAPTIONS[:2], _vectors(2, 8))
    enc = get_encoder("precomputed", text=str(tmp_path / "text.npy"))
    asked = ["a dog", "a bird", "a fish", "a bird", "a horse", "a cow"]
    assert enc.missing("text", asked) == ["a bird", "a fish", "a horse", "a cow"]
    with pytest.raises(EncoderInputError, match=r"text\.npy: 4 of 5 keys missing \(first: 'a bird', 'a fish', 'a horse'\)"):
        enc.encode_text(asked)


def test_refuses_wrong_dimension_naming_file_and_dims(tmp_path):
    write_parquet(tmp_path / "text.parquet", CAPTIONS, _vectors(4, 8))
    enc = get_encoder("precomputed", text=str(tmp_path / "text.parquet"), dim=16)
    with pytest.raises(ValueError, match=r"text vectors .*text\.parquet: dimension 8, expected dim 16"):
        enc.encode_text(["a dog"])
    write_npy(tmp_path / "modal.npy", ["1", "2"], _vectors(2, 12))
    both = get_encoder("precomputed", text=str(tmp_path / "text.parquet"), modal=str(tmp_path / "modal.npy"))
    with pytest.raises(ValueError, match=r"text\.parquet have dimension 8 but modal vectors .*modal\.npy have 12"):
        both.dim


@pytest.mark.parametrize("problem, message", [
    ("duplicate", r"key 'a dog' appears twice \(rows 0 and 2\)"),
    ("count", r"3 keys for 4 vectors"),
    ("nan", r"non-finite values in rows \[1\]"),
    ("no-sidecar", r"no sidecar keys file text\.keys\.json"),
])
def test_refuses_broken_files(tmp_path, problem, message):
    path = tmp_path / "text.npy"
    vecs = _vectors(4, 8)
    keys = list(CAPTIONS)
    if problem == "duplicate":
        keys[2] = "a dog"
    if problem == "count":
        keys = keys[:3]
    if problem == "nan":
        vecs[1, 3] = np.nan
    write_npy(path, keys, vecs)
    if problem == "no-sidecar":
        path.with_suffix(".keys.json").unlink()
    enc = get_encoder("precomputed", text=str(path))
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        enc.encode_text(["a dog"])


def test_parquet_without_key_column_and_unknown_format(tmp_path):
    pq.write_table(pa.table({"caption": ["a"], "vector": [[1.0, 2.0]]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"needs a key column \(key/text/id\).*columns are \['caption', 'vector'\]"):
        get_encoder("precomputed", text=str(tmp_path / "bad.parquet")).dim
    (tmp_path / "v.csv").write_text("a,1\n")
    with pytest.raises(ValueError, match="unsupported format '.csv'"):
        get_encoder("precomputed", text=str(tmp_path / "v.csv")).dim


def test_identity_follows_file_content(tmp_path):
    path = tmp_path / "text.npy"
    write_npy(path, CAPTIONS, _vectors(4, 8, seed=1))
    first = get_encoder("precomputed", text=str(path)).identity("text")
    write_npy(path, CAPTIONS, _vectors(4, 8, seed=2))
    second = get_encoder("precomputed", text=str(path)).identity("text")
    assert first != second and first["file"] == "text.npy"
    json.dumps(first)


def test_needs_a_file_and_a_known_modal_key(tmp_path):
    with pytest.raises(ValueError, match="needs `text` and/or `modal`"):
        get_encoder("precomputed")
    with pytest.raises(ValueError, match="modal_key 'uuid'"):
        get_encoder("precomputed", modal=str(tmp_path / "x.npy"), modal_key="uuid")
