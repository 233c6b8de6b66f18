"""ProjectionHead layout and checkpoint files (official layouts and ours)."""

import pytest
import torch

from textme import (
    CheckpointError,
    ProjectionHead,
    load_projection,
    read_projection_metadata,
    save_projection,
)
from textme.projector import STATE_DICT_KEYS

OFFICIAL_KEYS = [
    "mlps.0.weight", "mlps.0.bias",
    "mlps.1.weight", "mlps.1.bias", "mlps.1.running_mean", "mlps.1.running_var",
    "mlps.1.num_batches_tracked",
    "mlps.3.weight", "mlps.3.bias",
    "mlps.4.weight", "mlps.4.bias", "mlps.4.running_mean", "mlps.4.running_var",
    "mlps.4.num_batches_tracked",
]


def _trained_head(in_dim=6, proj_dim=12, out_dim=5, seed=0, dim_act="gelu"):
    """A head whose BatchNorm statistics are not the defaults (so loading them matters)."""
    torch.manual_seed(seed)
    head = ProjectionHead(in_dim, proj_dim, out_dim, dim_act=dim_act).train()
    with torch.no_grad():
        for _ in range(3):
            head(torch.randn(16, in_dim) * 2 + 1)
    return head.eval()


def test_state_dict_keys_are_the_official_ones():
    head = ProjectionHead(4, 8, 3)
    assert list(head.state_dict()) == OFFICIAL_KEYS == list(STATE_DICT_KEYS)
    assert head.state_dict()["mlps.0.weight"].shape == (8, 4)
    assert head.state_dict()["mlps.3.weight"].shape == (3, 8)


def test_output_rows_are_unit_norm_and_input_dim_checked():
    head = _trained_head()
    out = head(torch.randn(7, 6))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(7))
    with pytest.raises(ValueError, match=r"\[batch, 6\], got \[7, 5\]"):
        head(torch.randn(7, 5))


def test_init_and_activation_choices():
    eye = ProjectionHead(4, 4, 4, init_mode="eye")
    torch.testing.assert_close(eye.mlps[0].weight, torch.eye(4))
    torch.manual_seed(0)
    xav = ProjectionHead(4, 8, 4).mlps[0].weight
    bound = (6 / (4 + 8)) ** 0.5  # Xavier-uniform bound
    assert xav.abs().max() <= bound and xav.abs().max() > bound / 2
    assert isinstance(ProjectionHead(4, 8, 4, dim_act="tanh").mlps[2], torch.nn.Tanh)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        ProjectionHead(4, 8, 4, dim_act="swish")
    with pytest.raises(ValueError, match="init_mode"):
        ProjectionHead(4, 8, 4, init_mode="orthogonal")


@pytest.mark.parametrize(
    "wrapper", [None, "state_dict", "projector_state_dict", "model_state_dict"]
)
def test_official_layouts_load_to_identical_outputs(tmp_path, wrapper):
    head = _trained_head()
    state = head.state_dict()
    payload = state if wrapper is None else {wrapper: state, "epoch": 50, "args": {"lr": 5e-4}}
    path = tmp_path / "clip.pt"
    torch.save(payload, path)
    loaded = load_projection(path)
    assert not loaded.training
    assert (loaded.in_dim, loaded.proj_dim, loaded.out_dim) == (6, 12, 5)
    x = torch.randn(9, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), head(x), rtol=0, atol=0)
    assert read_projection_metadata(path)["wrapper"] == wrapper


def test_official_args_choose_the_activation(tmp_path):
    head = _trained_head(dim_act="silu")
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": head.state_dict(),
                "args": {"dim_act": "silu", "device": torch.device("cpu")}}, path)
    loaded = load_projection(path)
    assert isinstance(loaded.mlps[2], torch.nn.SiLU)
    x = torch.randn(4, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), head(x))


def test_foreign_keys_fail_naming_file_and_keys(tmp_path):
    path = tmp_path / "encoder.pt"
    torch.save({"visual.proj": torch.zeros(2, 2), "text.proj": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as err:
        load_projection(path)
    message = str(err.value)
    assert str(path) in message and "'visual.proj'" in message and "'text.proj'" in message


def test_wrapper_holding_another_model_fails_naming_its_keys(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match=r"under 'state_dict'.*'fc.weight'"):
        load_projection(path)


def test_partial_state_dict_names_missing_keys(tmp_path):
    state = _trained_head().state_dict()
    del state["mlps.4.running_var"]
    path = tmp_path / "partial.pt"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(CheckpointError, match="missing.*mlps.4.running_var"):
        load_projection(path)


def test_missing_num_batches_tracked_is_tolerated(tmp_path):
    head = _trained_head()
    state = {k: v for k, v in head.state_dict().items() if "num_batches" not in k}
    path = tmp_path / "old.pt"
    torch.save(state, path)
    x = torch.randn(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(load_projection(path)(x), head(x))


def test_non_checkpoint_files_fail_clearly(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_projection(junk)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_projection(tmp_path / "nothing.pt")
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointError, match="got list"):
        load_projection(listed)


class _Boom:
    def __reduce__(self):
        return (print, ("code ran",))


def test_code_in_a_checkpoint_is_not_run(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _trained_head().state_dict(), "hook": _Boom()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_projection(path)
    assert "code ran" not in capsys.readouterr().out


def test_save_projection_round_trip_and_official_reader_shape(tmp_path):
    head = _trained_head()
    path = save_projection(head, tmp_path / "out" / "proj.pt", encoder={"name": "toy"},
                           offset_fp="abc", pivot="qwen3", epochs=50, final_loss=0.42, lr=5e-4)
    x = torch.randn(5, 6)
    with torch.no_grad():
        torch.testing.assert_close(load_projection(path)(x), head(x), rtol=0, atol=0)
    # what the official code does with a file: torch.load, take ["state_dict"], strict load
    raw = torch.load(path, map_location="cpu", weights_only=True)
    fresh = ProjectionHead(6, 12, 5)
    fresh.load_state_dict(raw["state_dict"])
    assert raw["args"]["epochs"] == 50 and raw["args"]["out_dim"] == 5
    meta = read_projection_metadata(path)
    assert meta["metadata"] == {"encoder": {"name": "toy"}, "offset_fp": "abc", "pivot": "qwen3",
                                "epochs": 50, "final_loss": 0.42, "lr": 5e-4}
    dims = (meta["in_dim"], meta["proj_dim"], meta["out_dim"], meta["dim_act"])
    assert dims == (6, 12, 5, "gelu")
    assert meta["wrapper"] == "state_dict" and meta["method_version"]
    assert not list(path.parent.glob(".*.tmp"))  # no temporary left behind


def test_save_projection_refuses_metadata_that_is_not_json(tmp_path):
    with pytest.raises(TypeError, match=r"metadata\['offset'\]"):
        save_projection(_trained_head(), tmp_path / "p.pt", offset=torch.zeros(3))
    assert not (tmp_path / "p.pt").exists()


def test_metadata_of_official_files(tmp_path):
    path = tmp_path / "official.pt"
    torch.save({"state_dict": _trained_head().state_dict(), "args": {"epochs": 50}}, path)
    meta = read_projection_metadata(path)
    assert meta["metadata"] == {} and meta["method_version"] is None
    assert meta["args"] == {"epochs": 50}
