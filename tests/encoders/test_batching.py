"""The shared batch loop: order restored, out-of-memory backoff, progress bar."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textme.encoders.batching import run_in_batches


def _rows(idx):
    return np.asarray([[float(i), 1.0] for i in idx], np.float32)


def test_rows_land_at_their_input_positions():
    calls = []

    def encode(idx):
        calls.append(list(idx))
        return _rows(idx)

    out, size = run_in_batches(5, encode, batch_size=2, order=[4, 2, 0, 1, 3])
    assert calls == [[4, 2], [0, 1], [3]]
    assert out[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0] and size == 2


def test_oom_halves_until_it_fits_then_keeps_the_size():
    sizes = []

    def encode(idx):
        sizes.append(len(idx))
        if len(idx) > 3:
            raise torch.OutOfMemoryError("simulated")
        return _rows(idx)

    out, size = run_in_batches(10, encode, batch_size=16)
    assert sizes == [10, 5, 2, 2, 2, 2, 2] and size == 2  # each failure halves the failed batch
    assert out[:, 0].tolist() == list(map(float, range(10)))


def test_cost_budget_limits_padded_size_and_is_halved_on_oom():
    costs = [50, 40, 10, 10, 10, 10, 5, 5]  # already sorted longest first
    batches = []

    def encode(idx):
        batches.append(list(idx))
        return _rows(idx)

    run_in_batches(8, encode, batch_size=8, costs=costs, max_cost=100)
    # 2 x 50 <= 100 but 10 is < 3/4 of 50; four 10s, then 5 < 3/4 of 10 starts a new batch
    assert batches == [[0, 1], [2, 3, 4, 5], [6, 7]]
    batches.clear()
    run_in_batches(8, encode, batch_size=8, costs=costs, max_cost=60)
    assert batches[0] == [0]  # 2 x 50 > 60
    batches.clear()

    flat = [10] * 8

    def small_memory(idx):
        if len(idx) * max(flat[i] for i in idx) > 40:
            raise torch.OutOfMemoryError("simulated")
        return encode(idx)

    out, _ = run_in_batches(8, small_memory, batch_size=8, costs=flat, max_cost=80)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]]  # 80 failed; budget 40 and size 4 kept
    assert out[:, 0].tolist() == list(map(float, range(8)))


def test_oom_at_batch_one_and_other_errors_are_raised():
    def always_oom(idx):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(torch.OutOfMemoryError):
        run_in_batches(3, always_oom, batch_size=4)
    calls = []

    def broken(idx):
        calls.append(len(idx))
        raise RuntimeError("not a memory problem")

    with pytest.raises(RuntimeError, match="not a memory problem"):
        run_in_batches(3, broken, batch_size=4)
    assert calls == [3]  # no retry for other errors


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="permutation"):
        run_in_batches(3, _rows, batch_size=2, order=[0, 0, 1])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        run_in_batches(3, _rows, batch_size=0)
    with pytest.raises(RuntimeError, match="batch of 2 gave shape"):
        run_in_batches(2, lambda idx: np.zeros((1, 2)), batch_size=2)


def test_progress_bar_counts_items(capsys):
    run_in_batches(6, _rows, batch_size=4, progress=True, desc="demo")
    err = capsys.readouterr().err
    assert "demo" in err and "6/6" in err and "items/s" in err
