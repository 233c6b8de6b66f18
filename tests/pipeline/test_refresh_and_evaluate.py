"""The refresh and evaluation-only flows on the session's Prefect server, one mini config.

The steps share one config and run in order (the module fixture `steps`): evaluate-only
before any run (refused), refresh (cold: runs the pipeline), refresh again (nothing
changed), evaluate-only (existing heads), K_EDITED captions of scenes_audio edited then
refresh, and a refresh whose pipeline fails (state file untouched), then retried.
Each test asserts one property.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import yaml

from tasks.config import ConfigError, load_config
from tasks.keys import config_fingerprint
from tasks.workspace import Workspace
from tests.pipeline.helpers import K_EDITED, EncodeCounter, one_encoder_config, rows, write_mini_config

EDITED = "scenes_audio"  # feeds the pivot and toy_audio's text tower, nothing else


def _edit_captions(source: Path, k: int, tag: str) -> None:
    """Change the text of the first k captions (ids unchanged)."""
    lines = source.read_text().splitlines()
    for i in range(k):
        row = json.loads(lines[i])
        row["caption"] = f"{row['caption']} ({tag} {i})"
        lines[i] = json.dumps(row)
    source.write_text("\n".join(lines) + "\n")


def _recorded(state_text: str) -> dict:
    """{dataset: fingerprint} a refresh recorded (tasks/refresh_check.py)."""
    return json.loads(state_text)["sources"]


def _pipeline_run_ids(cfg) -> list[str]:
    """Completed textme-pipeline runs of this config, oldest first."""
    from tasks.common import open_tables

    runs = open_tables(cfg).read("runs").to_pylist()
    done = [r for r in runs if r["flow"] == "textme-pipeline" and r["status"] == "completed"]
    return [r["run_id"] for r in sorted(done, key=lambda r: r["finished_at"])]


def _values(cfg, run_id: str) -> dict[tuple, float]:
    return {(r["eval_name"], r["variant"], r["metric"], r["target_encoder"]): r["value"]
            for r in rows(cfg, "results", run_id)}


def _computed(cfg, run_id: str) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for r in rows(cfg, "embed_log", run_id):
        out[(r["encoder"], r["tower"])] = out.get((r["encoder"], r["tower"]), 0) + r["n_computed"]
    return out


@pytest.fixture(scope="module")
def steps(prefect_api, assets, tmp_path_factory):
    from flows.evaluate import evaluate_only
    from flows.refresh import refresh

    mp = pytest.MonkeyPatch()
    try:
        config = write_mini_config(tmp_path_factory.mktemp("refresh") / "mini", assets,
                                   n_captions=80, epochs=2, n_eval=20, name="refresh-mini")
        cfg = load_config(config)
        state_file = Workspace.of(cfg).refresh_state(config_fingerprint(cfg))
        counter = EncodeCounter(mp)
        out: dict = {"config": config, "cfg": cfg, "state_file": state_file}

        with pytest.raises(ConfigError) as info:
            evaluate_only(str(config))
        out["eval_before_error"] = str(info.value)
        out["eval_before_encoded"] = counter.total()

        out["first"] = refresh(str(config))
        out["first_state"] = state_file.read_text()
        counter.calls.clear()
        out["second"] = refresh(str(config), return_state=True)
        out["second_encoded"] = counter.total()
        out["runs_after_second"] = len(_pipeline_run_ids(cfg))
        out["state_after_second"] = state_file.read_text()
        checked = Workspace.of(cfg).refresh_checked(config_fingerprint(cfg))
        out["checked"] = json.loads(checked.read_text()) if checked.is_file() else None

        counter.calls.clear()
        state = evaluate_only(str(config), return_state=True)
        assert state.is_completed(), state
        out["eval_run"] = str(state.state_details.flow_run_id)
        out["eval_result"] = state.result()
        out["eval_encoded"] = dict(counter.calls)

        _edit_captions(Path(cfg.datasets[EDITED].source), K_EDITED, "edited")
        counter.calls.clear()
        out["edit"] = refresh(str(config))
        out["edit_encoded"] = dict(counter.calls)
        out["edit_state"] = state_file.read_text()

        # A pipeline that fails inside refresh: a source changed, but an evaluation
        # manifest is broken, so the pipeline stops and the fingerprints stay as they were.
        _edit_captions(Path(cfg.datasets["scenes_point"].source), 1, "failing")
        manifest = Path(cfg.evaluation_by_name("image_retrieval").manifest)
        good = manifest.read_text()
        manifest.write_text("{not json\n")
        failed = refresh(str(config), return_state=True)
        out["failed_state"] = failed
        out["after_failure_state"] = state_file.read_text()
        manifest.write_text(good)
        out["retried"] = refresh(str(config))
        out["retried_state"] = state_file.read_text()
        yield out
    finally:
        mp.undo()


# --------------------------------------------------------------------------- evaluate-only


def test_evaluate_before_any_run_fails_with_one_line(steps):
    message = steps["eval_before_error"]
    assert "\n" not in message
    assert message.startswith(str(steps["config"]))
    assert "run `textme run` first" in message
    assert steps["eval_before_encoded"] == 0


def test_evaluate_reuses_heads_trains_nothing_and_gives_the_same_values(steps):
    cfg = steps["cfg"]
    pipeline_run = _pipeline_run_ids(cfg)[0]
    assert steps["eval_result"]["evaluations"] == [spec.name for spec in cfg.evaluation]
    assert "text" not in steps["eval_encoded"]  # no caption through any text tower
    assert rows(cfg, "training", steps["eval_run"]) == []
    assert all(r["n_computed"] == 0 for r in rows(cfg, "embed_log", steps["eval_run"]))
    got = _values(cfg, steps["eval_run"])
    assert got and got == _values(cfg, pipeline_run)
    runs = [r for r in rows(cfg, "runs", steps["eval_run"]) if r["finished_at"] is not None]
    assert [(r["flow"], r["status"]) for r in runs] == [("textme-evaluate", "completed")]


def test_evaluate_only_named_entries(steps, monkeypatch):
    from flows.evaluate import evaluate_only

    counter = EncodeCounter(monkeypatch)
    state = evaluate_only(str(steps["config"]), ["point_classification"], return_state=True)
    assert state.is_completed(), state
    got = rows(steps["cfg"], "results", str(state.state_details.flow_run_id))
    assert {r["eval_name"] for r in got} == {"point_classification"}
    assert counter.total() == 0
    with pytest.raises(ConfigError) as info:
        evaluate_only(str(steps["config"]), ["nope"])
    assert str(info.value) == (f"{steps['config']}: unknown evaluation 'nope' (known: image_retrieval, "
                               "point_classification, audio_to_image, mixed_search)")


def test_evaluate_a_new_entry_with_existing_heads(steps, assets, monkeypatch):
    """An entry added after the run: its items and queries are embedded, through the
    heads already trained; no training caption is embedded, no stage before evaluation runs."""
    import demo.encoders
    import yaml
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter

    from flows.evaluate import evaluate_only
    from storage.fingerprint import normalize_text
    from tasks.inputs import read_eval_manifest

    data = yaml.safe_load(steps["config"].read_text())
    manifest = assets / "eval" / "image_retrieval.jsonl"  # all 200 held-out scenes
    data["evaluation"].append({"name": "image_retrieval_all", "task": "retrieval", "encoder": "toy_image",
                               "manifest": str(manifest)})
    config = steps["config"].with_name("config_more.yaml")  # same folder, same workdir
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    spec = load_config(config).evaluation_by_name("image_retrieval_all")

    seen: dict[str, list[str]] = {}
    original = demo.encoders._ToyBase._encode

    def recording(enc, tower, items, **kw):
        seen.setdefault(tower, []).extend(items)
        return original(enc, tower, items, **kw)

    monkeypatch.setattr(demo.encoders._ToyBase, "_encode", recording)
    state = evaluate_only(str(config), ["image_retrieval_all"], return_state=True)
    assert state.is_completed(), state
    run_id = str(state.state_details.flow_run_id)

    cfg = steps["cfg"]
    got = rows(cfg, "results", run_id)
    assert {r["eval_name"] for r in got} == {"image_retrieval_all"}
    assert {r["variant"] for r in got} == {"textme", "uncentred", "native", "chance"}
    assert rows(cfg, "training", run_id) == []
    assert seen.get("modal") and seen.get("query")  # new items and queries were embedded
    eval_captions = {normalize_text(c) for c in read_eval_manifest(spec).captions}
    assert {normalize_text(t) for t in seen.get("text", [])} <= eval_captions  # the native score's only
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
                                          task_run_filter=TaskRunFilter())
    assert task_runs and all(tr.name.startswith(("evaluate-", "results")) for tr in task_runs), \
        [tr.name for tr in task_runs]


# --------------------------------------------------------------------------- refresh


def test_first_refresh_runs_the_pipeline_for_every_source(steps):
    first = steps["first"]
    assert first["ran"] is True
    assert first["changed"] == ["scenes_audio", "scenes_image", "scenes_point"]
    assert first["pipeline"]["name"] == "refresh-mini" and first["pipeline"]["n_rows"] > 0
    recorded = _recorded(steps["first_state"])
    assert set(recorded) == set(first["changed"])
    assert all(fp["kind"] == "file" for fp in recorded.values())


def test_refresh_with_nothing_changed_encodes_nothing(steps):
    assert steps["second"].result() == {"changed": [], "ran": False}
    assert steps["second_encoded"] == 0
    assert steps["runs_after_second"] == 1  # the second refresh started no pipeline run


def test_refresh_with_nothing_changed_starts_no_subflow_and_records_its_check(steps, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    run_id = steps["second"].state_details.flow_run_id

    async def children():
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))

    from prefect.utilities.asyncutils import run_coro_as_sync

    assert run_coro_as_sync(children()) == []
    assert steps["state_after_second"] == steps["first_state"]  # what the first refresh recorded stays
    checked = steps["checked"]
    assert checked is not None and checked["ran"] is False and checked["changed"] == []
    assert checked["sources_recorded_at"] == json.loads(steps["first_state"])["recorded_at"]
    assert checked["checked_at"] >= checked["sources_recorded_at"]


def test_refresh_after_edit_embeds_exactly_k_texts_per_text_tower(steps):
    cfg = steps["cfg"]
    assert steps["edit"]["ran"] is True and steps["edit"]["changed"] == [EDITED]
    edit_run = _pipeline_run_ids(cfg)[1]
    computed = _computed(cfg, edit_run)
    assert computed[("pivot", "text")] == K_EDITED
    assert computed[("toy_audio", "text")] == K_EDITED
    assert sum(computed.values()) == 2 * K_EDITED, computed
    assert steps["edit_encoded"] == {"text": 2 * K_EDITED}
    before, after = _recorded(steps["first_state"]), _recorded(steps["edit_state"])
    assert before[EDITED] != after[EDITED]
    assert {k: v for k, v in before.items() if k != EDITED} == {k: v for k, v in after.items() if k != EDITED}


def test_failed_pipeline_leaves_the_fingerprints_and_is_retried(steps):
    assert steps["failed_state"].is_failed()
    assert steps["after_failure_state"] == steps["edit_state"]  # not recorded
    retried = steps["retried"]
    assert retried["ran"] is True and retried["changed"] == ["scenes_point"]
    assert _recorded(steps["retried_state"])["scenes_point"] != _recorded(steps["edit_state"])["scenes_point"]


def test_two_configs_sharing_a_workdir_and_dataset_names_keep_their_own_refresh_state(
        prefect_api, assets, tmp_path):
    """Config b reads other captions under the same dataset name, in a's workdir: once
    each has refreshed, neither makes the other re-run; an edit re-runs only its reader."""
    from flows.refresh import refresh

    a = one_encoder_config(tmp_path / "a", assets, evaluation=False)
    b = one_encoder_config(tmp_path / "b", assets, evaluation=False)
    data = yaml.safe_load(b.read_text())
    data["workdir"] = str(load_config(a).workdir)
    b.write_text(yaml.safe_dump(data, sort_keys=False))
    source_b = Path(load_config(b).datasets["scenes_image"].source)
    source_b.write_text("\n".join(source_b.read_text().splitlines()[:60]) + "\n")  # other captions
    assert load_config(a).workdir == load_config(b).workdir

    assert refresh(str(a))["ran"] and refresh(str(b))["ran"]  # first refresh of each
    assert refresh(str(a)) == {"changed": [], "ran": False}
    assert refresh(str(b)) == {"changed": [], "ran": False}

    _edit_captions(Path(load_config(a).datasets["scenes_image"].source), 1, "edited")
    assert refresh(str(b)) == {"changed": [], "ran": False}
    again = refresh(str(a))
    assert again["ran"] and again["changed"] == ["scenes_image"]
    assert refresh(str(b)) == {"changed": [], "ran": False}
