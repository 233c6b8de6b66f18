"""What a re-run with nothing changed imports and starts (issue 11: no-change re-runs in
seconds). The commands run in child processes under `python -X importtime`, whose stderr
names every module the process imported; how fast they are: benchmarks/bench_warm_run.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.config import load_config
from tests.pipeline.helpers import REPO, one_encoder_config, rows

#: What a run with every stage cached, its config checks and its cache keys must not load.
MODEL_LIBRARIES = ("torch", "torchvision", "transformers", "open_clip", "matplotlib")


def imported(stderr: str) -> set[str]:
    """Top-level packages in `-X importtime` output ("import time: self | cumulative | name")."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def textme(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "flows.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done, imported(done.stderr)


def test_demo_checks_and_keys_import_no_model_library(assets, tmp_path):
    """The demo (toy encoders, tiny open_clip and CLAP models): the CLI, the config
    checks of `textme run` and every encoder identity and key a cached run computes,
    from the config and file fingerprints alone."""
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["workdir"] = str(assets.parent)  # where the demo's models and items were built
    for dataset in config["datasets"].values():
        dataset["source"] = str((REPO / "configs" / dataset["source"]).resolve())
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    code = f"""
import json, sys
import flows.cli
from tasks import keys
from tasks.config import load_config
from tasks.validate import preflight
cfg = load_config({str(path)!r})
preflight(cfg, assets_ready=True)
ids = {{f"{{e}}/{{t}}": keys.namespace_id(keys.encoder_identity(cfg, e, t))
       for e in ["pivot", *cfg.encoders] for t in keys.encoder_of(cfg, e).towers}}
for d in cfg.datasets:
    keys.ingest_key(cfg, d)
for e, entry in cfg.encoders.items():
    keys.is_stand_in(cfg, e)
    if entry.own_offsets:
        keys.embed_items_key(cfg, e)
keys.train_params(cfg)
print(json.dumps([sorted(m for m in {MODEL_LIBRARIES!r} if m in sys.modules), ids]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    heavy, ids = json.loads(done.stdout)
    assert heavy == []
    assert {"tiny_clip/modal", "tiny_clap/modal", "toy_image/text", "pivot/query"} <= set(ids)


@pytest.fixture(scope="module")
def refreshed(prefect_api, assets, tmp_path_factory):
    """One toy encoder's config, refreshed once in-process (the real flow: pipeline run,
    sources recorded), so that every later command finds nothing changed."""
    from flows.refresh import refresh

    config = one_encoder_config(tmp_path_factory.mktemp("warm"), assets)
    assert refresh(str(config))["ran"] is True
    return config


def test_warm_run_imports_no_model_library_and_encodes_nothing(refreshed, subprocess_env):
    done, modules = textme("run", refreshed, env=subprocess_env)
    assert "prefect" in modules  # it did run the flow
    assert modules.isdisjoint(MODEL_LIBRARIES), sorted(modules & set(MODEL_LIBRARIES))
    cfg = load_config(refreshed)
    from tasks.common import open_tables

    runs = [r for r in open_tables(cfg).read("runs").to_pylist() if r["flow"] == "textme-pipeline"]
    assert len({r["run_id"] for r in runs}) == 2  # the refresh's pipeline run, then this one
    last = max(runs, key=lambda r: r["started_at"])["run_id"]
    assert sum(r["n_computed"] for r in rows(cfg, "embed_log", last)) == 0
    assert rows(cfg, "results", last)  # a run of its own, with its results
    assert "report:" in done.stdout  # the report is still written
    # The command ends without the interpreter's teardown (flows/cli.py `main`), after
    # Prefect's log queue was drained: the server has the run's last line.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[last])), limit=200)
    assert any(log.message.startswith("Finished in state Completed") for log in logs), [x.message for x in logs]


def test_no_change_refresh_starts_no_flow_and_imports_neither_prefect_nor_torch(refreshed, subprocess_env):
    cfg = load_config(refreshed)
    from tasks.common import open_tables
    from tasks.keys import config_fingerprint
    from tasks.workspace import Workspace

    runs_before = len(open_tables(cfg).read("runs"))
    checked = Workspace.of(cfg).refresh_checked(config_fingerprint(cfg))
    checked.unlink(missing_ok=True)
    done, modules = textme("refresh", refreshed, env=subprocess_env)
    assert "no source changed since" in done.stdout and "nothing to run" in done.stdout
    assert "pipeline ran: False" in done.stdout
    assert "prefect" not in modules and "torch" not in modules, sorted(modules & {"prefect", "torch"})
    assert len(open_tables(cfg).read("runs")) == runs_before
    assert json.loads(checked.read_text())["ran"] is False  # the check is recorded

    # A changed source is not skipped: the command starts the refresh flow, which runs the pipeline.
    source = Path(cfg.datasets["scenes_image"].source)
    source.write_text(source.read_text().replace("a ", "one ", 1))
    done, modules = textme("refresh", refreshed, env=subprocess_env)
    assert "changed: scenes_image; pipeline ran: True" in done.stdout
