"""Released heads and offsets as pipeline inputs, end to end on the session's Prefect server.

One mini config is run (heads trained), its heads and offsets exported in the official
layout (`textme export`), and those files come back as `released:` heads: from a local
folder and through `hf://` out of a huggingface_hub cache, offline. Because they are the
very heads and offsets our training wrote, the `released` rows must equal the `textme`
rows. A config with only released heads (`train: false`, no training captions) runs end
to end too, with the official query path (queries through another encoder's text tower
and head). The steps run once, in order (the module fixture `steps`); each test asserts
one property.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks.config import ConfigError, load_config
from tests.pipeline.helpers import run_pipeline, rows, write_mini_config

ENCODERS = ("toy_image", "toy_audio", "toy_point")
HUB_REPO = "SoyeonHH/TextME"
COMMIT = "c" * 40
# The official evaluation's query path: captions through another encoder's text tower
# and its head (LanguageBind's in the paper), items through the item encoder's head.
VIA_AUDIO = {"name": "image_retrieval_via_audio", "task": "retrieval", "encoder": "toy_image",
             "query": "toy_audio", "manifest": "eval/image_retrieval.jsonl"}


def _values(cfg, run_id: str, variant: str) -> dict[tuple, float]:
    return {(r["eval_name"], r["metric"], r["source_encoder"], r["target_encoder"]): r["value"]
            for r in rows(cfg, "results", run_id) if r["variant"] == variant}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _put_in_hub_cache(cache: Path, repo: str, filename: str, src: Path, commit: str) -> None:
    """Lay a file out as huggingface_hub's cache holds a downloaded model-repo file."""
    data = src.read_bytes()
    root = cache / f"models--{repo.replace('/', '--')}"
    blob = root / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    pointer = root / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if not pointer.exists():
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)


def _flickr30k_layout(root: Path, manifest: Path) -> Path:
    """An evaluation manifest's images and captions in Flickr30k's distributed layout
    (Karpathy's dataset_flickr30k.json + flickr30k-images/), test split, same order."""
    import json
    import shutil

    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    (root / "flickr30k-images").mkdir(parents=True)
    images = []
    for i, r in enumerate(rows):
        name = f"{i:04d}{Path(r['item']).suffix}"
        shutil.copyfile(r["item"], root / "flickr30k-images" / name)
        images.append({"filename": name, "split": "test", "sentences": [{"raw": c} for c in r["captions"]]})
    images.append({"filename": "train.png", "split": "train", "sentences": [{"raw": "not evaluated"}]})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return root


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _toy_vectors(folder: Path, config: Path, encoder: str, towers: tuple[str, ...], scale: float) -> dict[str, str]:
    """Precomputed files of a toy encoder's vectors (times about `scale`, per row) for every
    caption and item of the image evaluation: scale 10 makes raw vectors, as an encoder
    that does not normalise gives them."""
    import json

    from storage.fingerprint import normalize_text
    from textme.encoders import get_encoder

    import demo.encoders  # noqa: F401  (registers the toy encoders)

    entry = load_config(config).encoders[encoder]
    enc = get_encoder(entry.encoder, **entry.options)
    manifest = [json.loads(line) for line in (config.parent / "eval" / "image_retrieval.jsonl").read_text().splitlines()]
    items = [r["item"] for r in manifest]
    captions = list(dict.fromkeys(normalize_text(c) for r in manifest for c in r["captions"]))
    rng = np.random.default_rng(0)
    out = {}
    for tower, inputs, keys in (("text", captions, captions), ("modal", items, [Path(p).stem for p in items])):
        if tower not in towers:
            continue
        vecs = enc.encode(tower, inputs)
        if scale != 1:
            vecs = vecs * rng.uniform(0.8 * scale, 1.2 * scale, size=(len(inputs), 1))
        path = folder / f"{encoder}_{scale:g}_{tower}.npy"
        np.save(path, vecs.astype(np.float32))
        path.with_suffix(".keys.json").write_text(json.dumps(keys))
        out[tower] = str(path)
    return out


@pytest.fixture(scope="module")
def steps(prefect_api, assets, tmp_path_factory):
    from huggingface_hub import constants

    from tasks.released import export_heads

    mp = pytest.MonkeyPatch()
    records = _Records()
    task_logger = logging.getLogger("prefect.task_runs")
    task_logger.addHandler(records)
    try:
        root = tmp_path_factory.mktemp("released")
        config = write_mini_config(root / "mini", assets, name="released-mini", n_captions=100, epochs=2,
                                   n_eval=24)
        base = yaml.safe_load(config.read_text())
        base["evaluation"].append(VIA_AUDIO)
        _write(config, base)
        out: dict = {"config": config, "cfg": load_config(config), "records": records}
        out["trained"] = run_pipeline(config)

        exported = root / "exported"
        out["exported"] = export_heads(out["cfg"], exported)
        out["export_dir"] = exported

        # 1. the exported files as released heads, from a local folder, beside our own heads
        local = copy.deepcopy(base)
        for e in ENCODERS:
            local["encoders"][e]["released"] = {
                "head": str(exported / "projections" / "target_encoders" / f"{e}.pt"),
                "offset": str(exported / "offsets" / f"{e}_scenes_{e.split('_')[1]}")}
        out["local_config"] = _write(config.parent / "local.yaml", local)
        out["local"] = run_pipeline(out["local_config"])

        # 2. the same files through hf://, out of a huggingface_hub cache, offline
        cache = root / "hf" / "hub"
        for f in exported.rglob("*"):
            if f.is_file() and f.suffix in (".pt", ".pkl"):
                _put_in_hub_cache(cache, HUB_REPO, f.relative_to(exported).as_posix(), f, COMMIT)
        for name, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1")):
            mp.setenv(name, value)
        mp.setattr(constants, "HF_HUB_CACHE", str(cache))
        mp.setattr(constants, "HF_HUB_OFFLINE", True)
        hub = copy.deepcopy(base)
        for e in ENCODERS:
            hub["encoders"][e]["released"] = {
                "head": f"hf://{HUB_REPO}/projections/target_encoders/{e}.pt",
                "offset": f"hf://{HUB_REPO}/offsets/{e}_scenes_{e.split('_')[1]}@{COMMIT}"}
        out["hub_config"] = _write(config.parent / "hub.yaml", hub)
        out["hub"] = run_pipeline(out["hub_config"])
        missing = copy.deepcopy(hub)
        missing["encoders"]["toy_image"]["released"]["head"] = f"hf://{HUB_REPO}/projections/target_encoders/absent.pt"
        out["missing_config"] = _write(config.parent / "missing.yaml", missing)

        # 3. only released heads: no training, no training captions, no offsets of our own;
        #    and a benchmark entry: the image evaluation's files as Flickr30k distributes them
        only = copy.deepcopy(hub)
        only["name"] = "released-only"
        for e in ENCODERS:
            entry = only["encoders"][e]
            del entry["train_on"]
            entry["train"] = False
        only["training"]["ablate_centring"] = False
        flickr = _flickr30k_layout(root / "flickr30k", config.parent / "eval" / "image_retrieval.jsonl")
        only["evaluation"].append({**VIA_AUDIO, "name": "flickr_via_audio", "manifest": None,
                                   "benchmark": {"name": "flickr30k", "root": str(flickr), "split": "test"},
                                   "metrics": "official"})
        del only["evaluation"][-1]["manifest"]
        out["only_config"] = _write(config.parent / "only.yaml", only)
        records.messages.clear()
        out["only"] = run_pipeline(out["only_config"])
        out["only_warnings"] = list(records.messages)
        from flows.evaluate import evaluate_only

        out["only_evaluate"] = evaluate_only(str(out["only_config"]), ["image_retrieval"])

        # 4. the input check: the same released head fed raw x10 vectors (normalize: false)
        #    and the same vectors unit-normalised (normalize: true, the default)
        #    + a query-only encoder: toy_audio's text vectors as a precomputed text tower (no
        #    modal tower at all), with toy_audio's released head: LanguageBind's role in paper.yaml
        raw = _toy_vectors(root, config, "toy_image", ("text", "modal"), 10.0)
        checks = copy.deepcopy(only)
        checks["name"] = "released-checks"
        toy_head = only["encoders"]["toy_image"]["released"]
        checks["encoders"] = {
            name: {"encoder": "precomputed", "options": {"text": raw["text"], "modal": raw["modal"]},
                   "train": False, "normalize": normalize, "released": toy_head}
            for name, normalize in (("raw_image", False), ("unit_image", True))
        }
        checks["encoders"]["toy_image"] = only["encoders"]["toy_image"]
        checks["encoders"]["audio_text"] = {
            "encoder": "precomputed",
            "options": {"text": _toy_vectors(root, config, "toy_audio", ("text",), 1.0)["text"]},
            "train": False, "normalize": False,  # the vectors exactly as stored (already unit)
            "released": only["encoders"]["toy_audio"]["released"]}
        checks["evaluation"] = [
            {"name": f"retrieval_{name}", "task": "retrieval", "encoder": name,
             "manifest": "eval/image_retrieval.jsonl"} for name in ("raw_image", "unit_image")]
        checks["evaluation"].append({**VIA_AUDIO, "name": "via_audio_text", "query": "audio_text"})
        out["checks_config"] = _write(config.parent / "checks.yaml", checks)
        records.messages.clear()
        out["checks"] = run_pipeline(out["checks_config"])
        out["checks_warnings"] = list(records.messages)
        yield out
    finally:
        task_logger.removeHandler(records)
        mp.undo()


def test_export_writes_the_official_layout(steps):
    from textme import load_official_offset, load_offset, load_projection

    exported = steps["export_dir"]
    assert sorted(p.name for p in (exported / "projections" / "target_encoders").iterdir()) == [
        f"{e}.pt" for e in sorted(ENCODERS)]
    for entry in steps["exported"]:
        head = load_projection(entry["head"])  # a checkpoint our loader (and the official one) reads
        import torch

        ckpt = torch.load(entry["head"], weights_only=True)
        assert ckpt["projector_state_dict"].keys() == ckpt["state_dict"].keys()
        ours = load_offset(Path(steps["cfg"].workdir) / "offsets" / entry["offset_fp"])
        assert np.array_equal(load_official_offset(Path(entry["offset"]) / "text_embed_mean.pkl"), ours.text_mean)
        assert np.array_equal(load_official_offset(Path(entry["offset"]) / "img_embed_mean.pkl"), ours.modal_mean)
        assert head.in_dim == ours.dim


@pytest.mark.parametrize("run", ["local", "hub"])
def test_released_rows_equal_textme_rows_when_the_files_are_our_own(steps, run):
    cfg = load_config(steps[f"{run}_config"])
    textme, released = _values(cfg, steps[run], "textme"), _values(cfg, steps[run], "released")
    assert textme and released.keys() == textme.keys()
    assert released == textme  # same head, same offsets, same cached vectors: the same numbers
    # ... including the official query path (queries through toy_audio's text tower and head)
    assert any(k[0] == VIA_AUDIO["name"] and k[2] == "toy_audio" for k in released)
    assert textme == _values(steps["cfg"], steps["trained"], "textme")  # and as the first run scored


def test_released_lineage_names_the_files_by_sha256(steps):
    cfg = load_config(steps["hub_config"])
    by_encoder = {e["encoder"]: e for e in steps["exported"]}
    got = [r for r in rows(cfg, "results", steps["hub"]) if r["variant"] == "released"]
    for r in got:
        if r["eval_name"] != "image_retrieval":
            continue
        entry = by_encoder["toy_image"]
        assert r["projection_fp"] == f"released:toy_image.pt@sha256:{entry['head_sha256']}"
        assert r["offset_fp"].startswith("released:toy_image_scenes_image@sha256:")
        assert r["captions_fp"] is None
    local = {r["projection_fp"] for r in rows(load_config(steps["local_config"]), "results", steps["local"])
             if r["variant"] == "released"}
    assert local == {r["projection_fp"] for r in got}  # the same bytes, local or from the hub


def test_a_changed_released_file_is_a_new_key(steps):
    from tasks.plan import replay

    cfg = load_config(steps["local_config"])
    before = {st.unit: st.status for st in replay(cfg).stages}
    assert before["toy_image/released"] == "cached" and before["image_retrieval"] == "cached"
    head = Path(cfg.encoders["toy_image"].released.head)
    original = head.read_bytes()
    try:
        import torch

        ckpt = torch.load(head, weights_only=True)
        ckpt["state_dict"]["mlps.0.bias"] += 1e-3
        torch.save(ckpt, head)
        after = {st.unit: st.status for st in replay(cfg).stages}
    finally:
        head.write_bytes(original)
    assert after["toy_image/released"] == "stale"
    assert after["image_retrieval"] != "cached" and after["audio_to_image"] != "cached"
    assert after["toy_audio/released"] == "cached"


def test_missing_hub_file_offline_is_one_line(steps):
    from flows.pipeline import prepare

    with pytest.raises(ConfigError) as info:
        prepare(str(steps["missing_config"]))
    message = str(info.value)
    assert "\n" not in message
    assert "encoders.toy_image.released.head: 'projections/target_encoders/absent.pt' of 'SoyeonHH/TextME' " \
           "could not be fetched from the Hugging Face hub (HF_HUB_OFFLINE is set)" in message
    assert message.endswith("set `encoders.toy_image.released.head: /local/absent.pt`")


def test_released_only_config_trains_nothing_and_scores_the_same(steps):
    cfg = load_config(steps["only_config"])
    run = steps["only"]
    got = rows(cfg, "results", run)
    assert {r["variant"] for r in got} == {"released", "native", "chance"}
    assert rows(cfg, "training", run) == []
    # evaluation inputs only (queries through the pivot's query tower): no training captions
    # through the pivot, no item sample for offsets
    assert {(r["encoder"], r["tower"]) for r in rows(cfg, "embed_log", run)} <= {
        (e, t) for e in ENCODERS for t in ("text", "modal")} | {("pivot", "query")}
    stages = {st.stage for st in __import__("tasks.plan", fromlist=["replay"]).replay(cfg).stages}
    assert stages == {"released", "evaluate", "index"}  # the index projects through the released heads
    assert rows(cfg, "offsets", run) == []
    released = {k: v for k, v in _values(cfg, run, "released").items() if k[0] != "flickr_via_audio"}
    assert released == _values(steps["cfg"], steps["trained"], "textme")


def test_head_checks_are_recorded_and_silent_on_matched_inputs(steps):
    cfg = load_config(steps["only_config"])
    checks = rows(cfg, "head_checks", steps["only"])
    used = {(c["eval_name"], c["encoder"], c["tower"]) for c in checks}
    assert ("image_retrieval", "toy_image", "modal") in used
    assert (VIA_AUDIO["name"], "toy_audio", "text") in used  # the query side's head is checked too
    assert {c["variant"] for c in checks} == {"released"}
    assert all(c["verdict"] == "ok" and 0.25 <= c["var_ratio"] <= 4 for c in checks), checks
    assert not [m for m in steps["only_warnings"] if "head check" in m]


def test_head_check_warns_on_raw_inputs_to_a_unit_trained_head(steps):
    cfg = load_config(steps["checks_config"])
    checks = {c["encoder"]: c for c in rows(cfg, "head_checks", steps["checks"]) if c["tower"] == "modal"}
    assert checks["raw_image"]["verdict"] == "mismatch" and checks["raw_image"]["var_ratio"] > 50
    assert checks["unit_image"]["verdict"] == "ok"  # the same vectors, normalised: what the head expects
    assert checks["raw_image"]["projection_fp"] == checks["unit_image"]["projection_fp"]
    warnings = [m for m in steps["checks_warnings"] if "head check" in m]
    assert len(warnings) == 1  # raw_image's items (queries come from the pivot); unit_image is silent
    line = warnings[0]
    assert "encoder 'raw_image'" in line and "modal inputs" in line
    assert "\n" not in line and "projections/target_encoders/toy_image.pt" in line
    assert "median variance ratio" in line and "unit-normalised vs raw encoder outputs" in line
    assert "the wrong offset" in line and "other encoder weights" in line


def test_query_only_encoder_scores_like_the_encoder_it_was_made_from(steps):
    """A precomputed text tower with no modal tower, used only as `query:` with its released
    head: the official LanguageBind setup. Same vectors and head as toy_audio's: same rows."""
    checks = load_config(steps["checks_config"])
    assert load_config(steps["checks_config"]).encoders["audio_text"].offset_dataset is None
    got = {k[1]: v for k, v in _values(checks, steps["checks"], "released").items() if k[0] == "via_audio_text"}
    only = load_config(steps["only_config"])
    want = {k[1]: v for k, v in _values(only, steps["only"], "released").items() if k[0] == VIA_AUDIO["name"]}
    assert got and got == want
    head_checks = {(c["encoder"], c["tower"]): c["verdict"] for c in rows(checks, "head_checks", steps["checks"])}
    assert head_checks[("audio_text", "text")] == "ok"


def test_benchmark_entry_with_official_metrics_on_released_heads(steps):
    """The Flickr30k layout of the same images and captions scores what the manifest does
    (R@k: the official median is the lower middle rank, so it is at most ours)."""
    cfg = load_config(steps["only_config"])
    got = rows(cfg, "results", steps["only"])
    bench = {r["metric"]: r["value"] for r in got if r["eval_name"] == "flickr_via_audio" and r["variant"] == "released"}
    manifest = {r["metric"]: r["value"] for r in got
                if r["eval_name"] == VIA_AUDIO["name"] and r["variant"] == "released"}
    assert {r["dataset"] for r in got if r["eval_name"] == "flickr_via_audio"} == {"flickr30k:test"}
    for k in (1, 5, 10):
        assert bench[f"R@{k}"] == manifest[f"R@{k}"]
    assert bench["median_rank"] <= manifest["median_rank"]
    assert bench["mean_rank"] == manifest["mean_rank"]


def test_export_command(steps, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["export", str(steps["config"]), "--out", str(tmp_path / "x"),
                                 "--encoder", "toy_image"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x" / "projections" / "target_encoders" / "toy_image.pt").is_file()
    assert (tmp_path / "x" / "offsets" / "toy_image_scenes_image" / "img_embed_mean.pkl").is_file()
    assert "released: {head:" in result.output and "toy_image.pt" in result.output
    # the exported head is byte-for-byte the tensors the fixture's export wrote
    assert (tmp_path / "x" / "projections" / "target_encoders" / "toy_image.pt").read_bytes() == \
        (steps["export_dir"] / "projections" / "target_encoders" / "toy_image.pt").read_bytes()
    # a released-only config has nothing trained to export: one line, exit 2
    for extra, message in (([], "no trained heads to export (every encoder has train: false)"),
                           (["--encoder", "toy_image"], "encoders.toy_image: has no trained head (train: false)")):
        bad = runner.invoke(app, ["export", str(steps["only_config"]), "--out", str(tmp_path / "y"), *extra])
        assert bad.exit_code == 2 and message in bad.output


def test_status_and_evaluate_only_work_with_released_only_encoders(steps):
    from tasks.status import collect_status

    report = collect_status(load_config(steps["only_config"]))
    assert report["summary"]["missing"] == 0 and report["summary"]["stale"] == 0
    assert {st["stage"] for st in report["stages"]} == {"released", "evaluate", "index"}
    from tasks.search import current_indexes, search

    indexes, missing = current_indexes(load_config(steps["only_config"]))
    assert not missing and indexes and {m["variant"] for m in indexes.values()} == {"released"}
    hits = search(load_config(steps["only_config"]), "a red dog", k=5).hits
    assert len(hits) == 5 and {h.encoder for h in hits} <= set(indexes)
    assert steps["only_evaluate"]["n_rows"] > 0 and steps["only_evaluate"]["evaluations"] == ["image_retrieval"]
    from tasks.workspace import Workspace

    for name in ("only", "checks"):  # the run report is drawn for released-only (and query-only) encoders too
        folder = Workspace.of(load_config(steps[f"{name}_config"])).report_dir(steps[name])
        assert (folder / "index.html").is_file(), folder
