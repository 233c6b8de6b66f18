"""The training loop, its schedule and `project`."""

import copy
import math

import numpy as np
import pytest
import torch

from textme import Offset, TrainConfig, centroid, lr_at, project, train_projection
from textme.metrics import retrieval_metrics
from textme.training import _batches

from .helpers import unit_rows


def _paired(rng, n=96, d_in=8, d_out=6):
    z = rng.normal(size=(n, 4))
    text = unit_rows(z @ rng.normal(size=(4, d_in)) + 0.05 * rng.normal(size=(n, d_in)))
    pivot = unit_rows(z @ rng.normal(size=(4, d_out)))
    return text, pivot


def test_lr_schedule_cosine_warmup_restarts():
    assert lr_at(0, 100, 1.0) == 1.0
    assert lr_at(50, 100, 1.0, min_lr=0.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, min_lr=0.0) == pytest.approx(0.0)
    assert lr_at(99, 100, 1.0, min_lr=1e-6) > 1e-6
    lrs = [lr_at(s, 100, 1.0) for s in range(100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # monotone decay, no restarts
    assert lr_at(0, 100, 1.0, warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(37, 100, 1.0, schedule="constant") == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, 10, 1.0, schedule="linear")


def test_lr_restarts_match_pytorch_scheduler():
    total, base = 40, 0.1
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=total // 10, eta_min=1e-6)
    for step in range(total):  # the official trainer: lr used for step t, then sched.step()
        assert lr_at(step, total, base, schedule="cosine_restarts") == pytest.approx(
            opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()


def test_batches_never_leave_zero_steps():
    assert _batches(10, 4, drop_last=True) == [(0, 4), (4, 8)]
    assert _batches(10, 4, drop_last=False) == [(0, 4), (4, 8), (8, 10)]
    assert _batches(3, 512, drop_last=True) == [(0, 3)]  # fewer rows than one batch
    assert _batches(9, 4, drop_last=False) == [(0, 4), (4, 8)]  # a 1-row tail is skipped


def test_training_learns_and_reports_history(rng):
    text, pivot = _paired(rng)
    seen = []
    cfg = TrainConfig(epochs=30, batch_size=32, lr=1e-2)
    mu = centroid(text)
    head, history = train_projection(text, pivot, offset=mu, config=cfg, progress=seen.append)
    assert [row["epoch"] for row in history] == list(range(1, 31))
    assert set(history[0]) == {"epoch", "loss", "lr", "seconds"}
    assert seen == history
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["lr"] < history[0]["lr"]
    # it learned the pairing: captions find their own pivot vector far above chance (1%)
    assert retrieval_metrics(project(head, text, mu), pivot)["R@1"] > 40
    assert not head.training and head.proj_dim == 16  # default hidden = 2 * in_dim


def test_fewer_rows_than_a_batch_still_trains(rng):
    text, pivot = _paired(rng, n=20)
    init_head, _ = train_projection(text, pivot, offset=None,
                                    config=TrainConfig(epochs=1, lr=1e-12, schedule="constant"))
    head, history = train_projection(text, pivot, offset=None,
                                     config=TrainConfig(epochs=5, batch_size=512, lr=1e-2))
    assert len(history) == 5 and history[-1]["loss"] < history[0]["loss"]
    moved = (head.mlps[0].weight - init_head.mlps[0].weight).abs().max()
    assert moved > 1e-3


def test_deterministic_on_cpu_for_a_seed(rng):
    text, pivot = _paired(rng)
    cfg = TrainConfig(epochs=3, batch_size=32, seed=7, device="cpu")
    (h1, hist1), (h2, hist2) = (train_projection(text, pivot, offset=centroid(text), config=cfg)
                                for _ in range(2))
    for (k, v1), v2 in zip(h1.state_dict().items(), h2.state_dict().values(), strict=True):
        assert torch.equal(v1, v2), k
    assert [r["loss"] for r in hist1] == [r["loss"] for r in hist2]
    h3, _ = train_projection(text, pivot, offset=centroid(text),
                             config=TrainConfig(epochs=3, batch_size=32, seed=8, device="cpu"))
    assert not torch.equal(h1.mlps[0].weight, h3.mlps[0].weight)


def test_global_rng_is_left_alone(rng):
    text, pivot = _paired(rng, n=16)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_projection(text, pivot, offset=None, config=TrainConfig(epochs=1))
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("loss", ["infonce", "mse"])
def test_other_losses_train(rng, loss):
    text, pivot = _paired(rng)
    _, history = train_projection(text, pivot, offset=None,
                                  config=TrainConfig(epochs=8, batch_size=32, lr=3e-3, loss=loss))
    assert history[-1]["loss"] < history[0]["loss"]


def test_input_errors(rng):
    text, pivot = _paired(rng)
    with pytest.raises(ValueError, match="96 rows but pivot_embeddings has 95"):
        train_projection(text, pivot[:95], offset=None)
    with pytest.raises(ValueError, match="at least 2"):
        train_projection(text[:1], pivot[:1], offset=None)
    bad = text.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match="text_embeddings: row 5"):
        train_projection(bad, pivot, offset=None)
    with pytest.raises(ValueError, match="dimension 3 does not match embeddings' 8"):
        train_projection(text, pivot, offset=np.zeros(3))
    with pytest.raises(TypeError, match="pass its text_mean"):
        train_projection(text, pivot, offset=Offset.from_embeddings(text))
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=1)


@pytest.mark.parametrize("field, value", [
    ("loss", "triplet"), ("init_mode", "kaiming"), ("dim_act", "swish2"), ("betas", (0.9,)),
    ("betas", (0.9, 1.5)), ("temperature", 0.0), ("bottom_perc_margin", 0.95), ("max_neg", 0),
    ("device", "gpu"), ("weight_decay", -0.1), ("eps", 0.0),
])
def test_a_bad_value_is_refused_when_the_config_is_built_naming_its_field(field, value):
    # a typo must fail before any data is embedded, not at the train stage
    with pytest.raises(ValueError, match=rf"^TrainConfig: {field} must"):
        TrainConfig(**{field: value})


def test_config_defaults_are_the_papers_and_json_able():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay) == (50, 512, 5e-4, 0.01)
    assert cfg.betas == (0.9, 0.999) and cfg.grad_clip == 1.0 and cfg.temperature == 0.07
    assert (cfg.top_perc_margin, cfg.bottom_perc_margin) == (0.9, 0.1)
    assert cfg.schedule == "cosine" and cfg.warmup_steps == 0 and cfg.drop_last
    assert cfg.to_dict()["betas"] == [0.9, 0.999]


def test_project_shapes_norms_batching_and_mode(rng):
    text, pivot = _paired(rng)
    mu = centroid(text)
    head, _ = train_projection(text, pivot, offset=mu, config=TrainConfig(epochs=2, batch_size=32))
    head.train()  # project must not care, and must not change BatchNorm statistics
    running = head.mlps[1].running_mean.clone()
    out = project(head, text, offset=mu)
    assert out.dtype == np.float32 and out.shape == (96, 6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    chunked = project(head, torch.from_numpy(text), mu, batch_size=7)
    np.testing.assert_allclose(chunked, out, atol=1e-6)
    assert head.training and torch.equal(head.mlps[1].running_mean, running)
    # centring is applied: a different offset gives different outputs
    assert not np.allclose(project(head, text, offset=None), out, atol=1e-3)
    assert project(head, text[:0]).shape == (0, 6)
    with pytest.raises(ValueError, match="dim 5, the head expects 8"):
        project(head, text[:, :5])


def test_bf16_autocast_path_runs_on_cpu(rng):
    text, pivot = _paired(rng)
    _, history = train_projection(text, pivot, offset=None,
                                  config=TrainConfig(epochs=2, batch_size=32, precision="bf16"))
    assert all(math.isfinite(r["loss"]) for r in history)


def test_head_ignores_other_threads_using_the_global_rng(rng):
    # Prefect runs train tasks in threads: a head must not depend on what other threads
    # do with the global RNG meanwhile.
    import threading

    text, pivot = _paired(rng)
    cfg = TrainConfig(epochs=2, batch_size=32, seed=3, device="cpu")
    alone, _ = train_projection(text, pivot, offset=centroid(text), config=cfg)

    stop = threading.Event()

    def hammer():
        i = 0
        while not stop.is_set():
            torch.manual_seed(i)
            torch.rand(64)
            i += 1

    noise = threading.Thread(target=hammer)
    noise.start()
    try:
        disturbed = [train_projection(text, pivot, offset=centroid(text), config=cfg)[0] for _ in range(5)]
    finally:
        stop.set()
        noise.join()
    for head in disturbed:
        for key, value in alone.state_dict().items():
            assert torch.equal(value, head.state_dict()[key]), key


def _reference_train(text, pivot, mu, cfg):
    """The official loop as this code ran it before float16 rows: every row cast to
    float32 and centred up front, batches drawn from the centred copy."""
    from textme import ProjectionHead, make_loss
    from textme.training import lr_at

    x = torch.from_numpy(np.asarray(text, np.float32)) - torch.from_numpy(mu)
    y = torch.from_numpy(np.asarray(pivot, np.float32))
    head = ProjectionHead(x.shape[1], 2 * x.shape[1], y.shape[1],
                          generator=torch.Generator().manual_seed(cfg.seed)).train()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                            weight_decay=cfg.weight_decay)
    loss_fn = make_loss(cfg.loss, **cfg.loss_kwargs())
    shuffle = torch.Generator().manual_seed(cfg.seed)
    batches = _batches(len(x), cfg.batch_size, cfg.drop_last)
    step = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=shuffle)
        for a, b in batches:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg.epochs * len(batches), cfg.lr, min_lr=cfg.min_lr)
            loss = loss_fn(head(x[order[a:b]]), y[order[a:b]])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
    return head.eval()


def test_float16_rows_train_the_same_weights_as_the_float32_official_order(rng):
    # Training keeps float16 rows as they are and centres each batch as it is drawn;
    # the float32 values it computes are the ones centring all rows first gave.
    text, pivot = _paired(rng, n=300)
    text16, pivot16 = text.astype(np.float16), pivot.astype(np.float16)
    mu = centroid(text16)
    cfg = TrainConfig(epochs=3, batch_size=64, seed=5, device="cpu")
    expected = _reference_train(text16, pivot16, mu, cfg)
    head, _ = train_projection(text16, pivot16, offset=mu, config=cfg)
    for key, value in expected.state_dict().items():
        assert torch.equal(value, head.state_dict()[key]), key


def _offset_data(rng, n=1500, d_in=32, d_out=24):
    text, pivot = _paired(rng, n=n, d_in=d_in, d_out=d_out)
    text = unit_rows(text + 0.8)  # a large common component, as real text towers have
    return text, pivot, centroid(text)


def test_derived_uncentred_head_equals_a_trained_uncentred_head(rng):
    # BatchNorm after the first Linear: centred and uncentred training give the same
    # weights; only the first running mean differs, by the running average of W1_t mu.
    # eps=1e-3 keeps AdamW from turning the rounding residue of the two Linear biases
    # (zero gradient in exact arithmetic) into steps of size lr (UncentredShift's doc);
    # with the paper's 1e-8 those biases differ by noise between any two runs.
    from textme.training import train_projection_with_uncentred

    text, pivot, mu = _offset_data(rng)
    cfg = TrainConfig(epochs=6, batch_size=128, lr=2e-3, eps=1e-3, schedule="constant", seed=2, device="cpu")
    centred, derived, history = train_projection_with_uncentred(text, pivot, offset=mu, config=cfg)
    trained, trained_history = train_projection(text, pivot, offset=None, config=cfg)
    alone, _ = train_projection(text, pivot, offset=mu, config=cfg)
    for key, value in alone.state_dict().items():  # tracking the twin leaves the centred run alone
        assert torch.equal(value, centred.state_dict()[key]), key
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(derived.state_dict()[key], value, atol=2e-4, rtol=1e-4, msg=key)
    assert not torch.allclose(derived.mlps[1].running_mean, centred.mlps[1].running_mean, atol=1e-2)
    np.testing.assert_allclose(project(derived, text), project(trained, text), atol=1e-4)
    np.testing.assert_allclose([h["loss"] for h in history], [h["loss"] for h in trained_history], rtol=1e-4)
    # W1_final mu alone is not it: the average runs over the W1 of the last steps.
    naive = copy.deepcopy(centred)
    with torch.no_grad():
        naive.mlps[1].running_mean += centred.mlps[0].weight @ torch.from_numpy(mu)
    assert np.abs(project(naive, text) - project(trained, text)).max() > 10 * np.abs(
        project(derived, text) - project(trained, text)).max()


def test_warm_start_continues_from_the_given_head(rng):
    text, pivot, mu = _offset_data(rng, n=400)
    cfg = TrainConfig(epochs=4, batch_size=64, lr=3e-3, seed=1, device="cpu")
    first, history = train_projection(text, pivot, offset=mu, config=cfg)
    warm_cfg = TrainConfig(epochs=1, batch_size=64, lr=3e-3, seed=1, device="cpu")
    warm, warm_history = train_projection(text, pivot, offset=mu, config=warm_cfg, init=first)
    cold, cold_history = train_projection(text, pivot, offset=mu, config=warm_cfg)
    assert warm_history[0]["loss"] < cold_history[0]["loss"]
    assert warm_history[0]["loss"] < history[0]["loss"]
    moved = (warm.mlps[0].weight - first.mlps[0].weight).abs().max()
    assert 0 < moved < (cold.mlps[0].weight - first.mlps[0].weight).abs().max()
    assert first.mlps[0].weight.requires_grad and not torch.equal(first.mlps[0].weight, warm.mlps[0].weight)
    with pytest.raises(ValueError, match="warm start: the starting head"):
        train_projection(text[:, :16], pivot, offset=None, config=warm_cfg, init=first)
