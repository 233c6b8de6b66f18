"""Centroids, our offset files, the official pickles, and centring."""

import json
import pickle

import numpy as np
import pytest
import torch

from textme import Offset, centroid, process_embeddings
from textme.offsets import load_official_offset, load_offset, save_official_offset, save_offset


def test_centroid_is_mean_of_normalised_rows():
    x = np.array([[3.0, 0.0], [0.0, 0.5], [0.0, -2.0]], dtype=np.float32)
    # unit rows (1,0), (0,1), (0,-1): mean (1/3, 0); lengths must not matter
    np.testing.assert_allclose(centroid(x), [1 / 3, 0.0], atol=1e-7)
    assert centroid(x).dtype == np.float32 and centroid(torch.from_numpy(x)).shape == (2,)


def test_centroid_rejects_bad_rows():
    with pytest.raises(ValueError, match="row 1 is zero"):
        centroid(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\[n>0, d>0\], got shape \[3\]"):
        centroid(np.ones(3))


def test_offset_properties(rng):
    text = rng.normal(size=(50, 4)) + [3, 0, 0, 0]
    modal = rng.normal(size=(40, 4)) + [0, 3, 0, 0]
    off = Offset.from_embeddings(text, modal, dataset="toy")
    assert (off.n_text, off.n_modal, off.dim) == (50, 40, 4)
    np.testing.assert_allclose(off.gap, off.modal_mean - off.text_mean)
    assert off.gap_norm == pytest.approx(float(np.linalg.norm(off.gap)))
    assert 0.7 < off.norms["text"] < 1.0 and 0.7 < off.norms["modal"] < 1.0
    assert off.gap_norm > 1.0  # two clusters on different axes
    text_only = Offset.from_embeddings(text)
    assert text_only.gap is None and text_only.gap_norm is None and text_only.norms["modal"] is None
    with pytest.raises(ValueError, match="does not match"):
        Offset(np.zeros(4), np.zeros(3))


def test_own_format_round_trip(tmp_path, rng):
    off = Offset.from_embeddings(rng.normal(size=(20, 8)), rng.normal(size=(30, 8)), source="unit")
    folder = save_offset(off, tmp_path / "clip_coco", encoder="clip", n_requested=5000)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["modal_mean.npy", "offset.json", "text_mean.npy"]
    record = json.loads((folder / "offset.json").read_text())
    assert record["n_text"] == 20 and record["n_modal"] == 30 and record["dim"] == 8
    assert record["gap_norm"] == pytest.approx(off.gap_norm)
    assert record["text_norm"] == pytest.approx(off.norms["text"])
    back = load_offset(folder)
    np.testing.assert_array_equal(back.text_mean, off.text_mean)
    np.testing.assert_array_equal(back.modal_mean, off.modal_mean)
    assert back.metadata == {"source": "unit", "encoder": "clip", "n_requested": 5000}
    assert np.load(folder / "text_mean.npy", allow_pickle=False).dtype == np.float32


def test_own_format_text_only_and_errors(tmp_path, rng):
    folder = save_offset(Offset.from_embeddings(rng.normal(size=(5, 3))), tmp_path / "t")
    assert load_offset(folder).modal_mean is None
    np.save(folder / "text_mean.npy", np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match=r"text_mean.npy: shape \[4\], offset.json says \[3\]"):
        load_offset(folder)
    with pytest.raises(FileNotFoundError, match="offset.json"):
        load_offset(tmp_path / "absent")


def test_official_pickle_round_trip(tmp_path, rng):
    vec = rng.normal(size=16).astype(np.float32)
    path = save_official_offset(vec, tmp_path / "clip_coco" / "text_embed_mean.pkl")
    with path.open("rb") as fh:  # the official reader: a plain pickle of a [1, d] tensor
        raw = pickle.load(fh)
    assert isinstance(raw, torch.Tensor) and raw.shape == (1, 16) and raw.dtype == torch.float32
    np.testing.assert_array_equal(load_official_offset(path), vec)


def test_reads_pickles_as_the_official_code_writes_them(tmp_path):
    # compute_offset.py: pickle.dump(text_mean.cpu(), f) with text_mean a [1, d] tensor
    tensor_file = tmp_path / "img_embed_mean.pkl"
    with tensor_file.open("wb") as fh:
        pickle.dump(torch.arange(6, dtype=torch.float32).reshape(1, 6) / 10, fh)
    np.testing.assert_allclose(load_official_offset(tensor_file), np.arange(6) / 10, rtol=1e-6)
    # textme/utils.py save_offset: a pickled numpy array [d]
    array_file = tmp_path / "text_offset.pkl"
    array_file.write_bytes(pickle.dumps(np.ones(6, dtype=np.float64)))
    out = load_official_offset(array_file)
    assert out.dtype == np.float32 and out.tolist() == [1.0] * 6


class _Evil:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_official_loader_runs_no_code(tmp_path):
    path = tmp_path / "text_embed_mean.pkl"
    path.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(ValueError, match="refusing to load builtins.eval"):
        load_official_offset(path)
    other = tmp_path / "dict.pkl"
    other.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="dict"):
        load_official_offset(other)


def test_process_embeddings_numpy_and_torch(rng):
    x = rng.normal(size=(5, 3)).astype(np.float32)
    off = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    out = process_embeddings(x, off)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, x - off)
    t = process_embeddings(torch.from_numpy(x), torch.from_numpy(off).reshape(1, 3))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), x - off)
    np.testing.assert_allclose(process_embeddings(torch.from_numpy(x), off).numpy(), x - off)
    assert process_embeddings(x) is x  # no offset, no noise: untouched
    with pytest.raises(ValueError, match="dimension 2 does not match embeddings' 3"):
        process_embeddings(x, np.zeros(2))


def test_gaussian_and_ball_noise(rng):
    x = np.zeros((4000, 8), dtype=np.float32)
    g = process_embeddings(x, noise_std=0.5, generator=np.random.default_rng(0))
    assert g.std() == pytest.approx(0.5, rel=0.05)
    ball = process_embeddings(torch.zeros(4000, 8), noise_std=0.5, uniform_noise=True,
                              generator=torch.Generator().manual_seed(0))
    radius = ball.norm(dim=1)
    assert radius.max() <= 0.5 + 1e-6 and radius.mean() == pytest.approx(0.25, rel=0.05)
    again = process_embeddings(torch.zeros(4000, 8), noise_std=0.5, uniform_noise=True,
                               generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ball, again)
    with pytest.raises(ValueError, match="noise_std"):
        process_embeddings(x, noise_std=-1)


def test_centroid_of_chunks_equals_the_centroid_of_all_rows_bit_for_bit():
    from textme.offsets import CentroidAccumulator

    rng = np.random.default_rng(3)
    x = rng.normal(size=(1001, 24)).astype(np.float32) + 0.3
    whole = centroid(x)
    x64 = x.astype(np.float64)  # the formula as written before chunks existed
    assert np.array_equal(whole, (x64 / np.linalg.norm(x64, axis=1)[:, None]).mean(axis=0).astype(np.float32))
    for chunk in (1, 7, 256, 5000):
        acc = CentroidAccumulator(24)
        for start in range(0, len(x), chunk):
            acc.add(x[start : start + chunk])
        assert acc.n == len(x) and np.array_equal(acc.mean(), whole), chunk
    x[600] = 0
    acc = CentroidAccumulator(24).add(x[:500])
    with pytest.raises(ValueError, match="row 600 is zero"):
        acc.add(x[500:])
