"""A benchmark as an evaluation input: `textme manifest`, and the pipeline's
`benchmark_inputs` (the same EvalInputs a manifest gives, fingerprinted by content)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.config import EvalSpec
from tasks.inputs import (
    InputError,
    benchmark_fingerprint,
    benchmark_inputs,
    eval_inputs_fingerprint,
    read_eval_manifest,
)
from tests.data import layouts

runner = CliRunner()


def manifest(*args) -> object:
    return runner.invoke(app, ["manifest", *[str(a) for a in args]], catch_exceptions=False)


def _fields(e) -> tuple:
    return (e.task, e.items, e.captions, e.query_item, e.labels, e.source_items, e.target_items, e.docs, e.queries)


@pytest.mark.parametrize("name, task, split", [
    ("audiocaps", "retrieval", None),
    ("esc50", "classification", "fold1"),
    ("scanobjectnn", "classification", None),
    ("mixbench", "mixed_search", "MSCOCO"),
])
def test_manifest_command_and_benchmark_inputs_agree(tmp_path, name, task, split):
    root = tmp_path / "bench"
    getattr(layouts, name)(root)
    out = tmp_path / "m" / f"{name}.jsonl"
    args = [name, root, "--out", out] + (["--split", split] if split else [])
    result = manifest(*args)
    assert result.exit_code == 0, result.output
    assert f"to {out}" in result.output and result.output.startswith("wrote ")
    from_manifest = read_eval_manifest(EvalSpec(name="e", task=task, manifest=str(out)))
    direct = benchmark_inputs(name, root, split, tmp_path / "m" / f"{name}_items")
    assert _fields(direct) == _fields(from_manifest)
    assert direct.dataset.startswith(name) and from_manifest.dataset == name
    # an evaluation entry with a `benchmark:` block reads the same rows
    spec = SimpleNamespace(name="e", task=task, manifest=None,
                           benchmark={"name": name, "root": str(root), "split": split,
                                      "items_dir": str(tmp_path / "m" / f"{name}_items")})
    assert _fields(read_eval_manifest(spec)) == _fields(from_manifest)
    assert eval_inputs_fingerprint(spec) == benchmark_fingerprint(name, root, split,
                                                                  tmp_path / "m" / f"{name}_items")


def test_manifest_list_names_every_reader_on_one_line_each():
    result = manifest("--list")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["audiocaps", "clotho", "coco", "esc50", "flickr30k",
                                                    "mixbench", "modelnet40", "msrvtt", "msvd", "rsna",
                                                    "scanobjectnn"]


def test_manifest_command_errors_exit_2_in_one_line(tmp_path):
    layouts.clotho(tmp_path)
    (tmp_path / "evaluation" / "c.wav").unlink()
    result = manifest("clotho", tmp_path, "--out", tmp_path / "c.jsonl")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "clotho: 1 of 2 audio files not found" in result.output
    assert not (tmp_path / "c.jsonl").exists()
    for args, message in [
        (("nope", tmp_path, "--out", tmp_path / "x.jsonl"), "unknown benchmark 'nope'"),
        (("clotho", tmp_path, "--out", tmp_path / "x.jsonl", "--split", "test"), "unknown split 'test'"),
        (("clotho", tmp_path, "--out", tmp_path / "x.jsonl", "-o", "seed"), "expected KEY=VALUE"),
        (("clotho", tmp_path), "give NAME ROOT --out FILE"),
    ]:
        result = manifest(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_manifest_options_are_typed(tmp_path):
    layouts.mixbench(tmp_path / "mb")
    out = tmp_path / "mb.jsonl"
    assert manifest("mixbench", tmp_path / "mb", "--out", out, "-o", "seed=7").exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ours = benchmark_inputs("mixbench", tmp_path / "mb", options={"seed": 7})
    assert [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == "doc"] == ours.docs


def test_benchmark_fingerprint_follows_content_not_place(tmp_path):
    root = tmp_path / "a"
    layouts.audiocaps(root)
    fp = benchmark_fingerprint("audiocaps", root)
    copy = tmp_path / "b"
    shutil.copytree(root, copy)
    assert benchmark_fingerprint("audiocaps", copy) == fp  # moved: same content, same key
    csv = root / "test.csv"
    csv.write_text(csv.read_text().replace("heavy rain", "light rain"))
    edited = benchmark_fingerprint("audiocaps", root)
    assert edited != fp  # an edited caption is a new key (and no stale in-process memo)
    assert benchmark_inputs("audiocaps", root).captions[4] == "light rain"
    (root / "test" / "yt_BBB.wav").write_bytes(b"other audio")
    assert benchmark_fingerprint("audiocaps", root) != edited  # an item's bytes count too
    assert benchmark_fingerprint("audiocaps", root, options={}) == benchmark_fingerprint("audiocaps", root)


def test_benchmark_errors_are_input_errors(tmp_path):
    layouts.esc50(tmp_path)
    spec = SimpleNamespace(name="e", task="retrieval", manifest=None, benchmark={"name": "esc50", "root": str(tmp_path)})
    with pytest.raises(InputError, match="evaluation 'e': benchmark 'esc50' is a classification benchmark, "
                                         "the entry's task is retrieval"):
        read_eval_manifest(spec)
    with pytest.raises(InputError, match="esc50: .*/nowhere not found"):
        benchmark_inputs("esc50", tmp_path / "nowhere")
    with pytest.raises(InputError, match="evaluation manifest not found"):
        read_eval_manifest(EvalSpec(name="e", task="retrieval", manifest=str(tmp_path / "none.jsonl")))


def test_manifest_fingerprint_is_unchanged_by_the_move(tmp_path):
    """The manifest path's fingerprint is what it was before benchmarks existed, so the
    evaluate stage's existing cache entries stay valid."""
    from storage.fingerprint import file_key, fingerprint

    (tmp_path / "x.png").write_bytes(b"x")
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"item": "x.png", "captions": ["a"]}) + "\n")
    spec = EvalSpec(name="e", task="retrieval", manifest=str(m))
    assert eval_inputs_fingerprint(spec) == fingerprint({"manifest": file_key(m), "items": [file_key(tmp_path / "x.png")]})
