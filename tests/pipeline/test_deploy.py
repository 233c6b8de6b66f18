"""`prefect deploy --all` of the shipped prefect.yaml from a fresh copy of the project, on
a real Prefect server whose scheduler service runs: the hourly refresh gets scheduled
runs, and a process worker runs one to completion.

The session's server (prefect_test_harness) is an ephemeral server, which runs no
scheduler, so this module starts its own (`prefect server start`, scheduler looping
every second). With SQLAlchemy 2.1 the scheduler's bulk insert of flow runs fails
(`Can't evaluate bulk DML statement`), no run is ever scheduled, and
`test_the_refresh_schedule_fires_and_a_worker_runs_it` fails waiting for one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.pipeline.helpers import REPO

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_clone(dest: Path) -> Path:
    """The project's files as a fresh clone has them (tracked and new, never ignored)."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, names):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def scheduler_server(tmp_path_factory):
    """A real Prefect server with its scheduler on; (API URL, environment for the CLI)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "2",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "3",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    log = open(home / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port), "--no-ui"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Prefect server did not start in 180 s"
            time.sleep(0.5)
        yield url, env, home / "server.log"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def deployed(scheduler_server, tmp_path_factory):
    """The project copied as a fresh clone and deployed from there: (clone, URL, env)."""
    url, env, _ = scheduler_server
    clone = _fresh_clone(tmp_path_factory.mktemp("clone"))

    from prefect.client.schemas.actions import WorkPoolCreate

    with _client(url) as client:  # `prefect work-pool create textme-local --type process`, without a CLI start
        client.create_work_pool(WorkPoolCreate(name="textme-local", type="process"))
    done = subprocess.run([sys.executable, "-m", "prefect", "deploy", "--all"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return clone, url, env


def _client(url: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        return get_client(sync_client=True)


def test_prefect_deploy_all(deployed):
    clone, url, _ = deployed
    with _client(url) as client:
        pipeline = client.read_deployment_by_name("textme-pipeline/pipeline")
        refresh = client.read_deployment_by_name("textme-refresh/refresh")
        evaluate = client.read_deployment_by_name("textme-evaluate/evaluate")
    assert pipeline.parameters == {"config": "configs/demo.yaml"}
    assert pipeline.work_pool_name == "textme-local" and "textme" in pipeline.tags
    assert [s.schedule.interval.total_seconds() for s in refresh.schedules] == [3600.0]
    assert all(s.active for s in refresh.schedules)
    assert refresh.parameters == {"config": "configs/demo.yaml", "force": False}
    assert evaluate.entrypoint == "flows/evaluate.py:evaluate_only"
    for d in (pipeline, refresh, evaluate):  # entrypoints and the config exist in a fresh clone
        assert (clone / d.entrypoint.split(":")[0]).is_file() and (clone / d.parameters["config"]).is_file()
    # the worker runs from the folder `prefect deploy` ran in
    steps = [next(iter(step.values())) for step in pipeline.pull_steps]
    assert any(Path(s.get("directory", "")) == clone for s in steps), pipeline.pull_steps


def _seed_refresh_state(config: Path) -> None:
    """Record the demo's caption sources as already seen, so the refresh run finds
    nothing changed and exits without running the whole demo (about a minute). Should
    the state's format change, the run still completes, only slower."""
    from flows.refresh import fingerprint_sources
    from tasks.config import load_config
    from tasks.keys import config_fingerprint
    from tasks.workspace import Workspace, atomic_write_text

    cfg = load_config(config)
    state = Workspace.of(cfg).refresh_state(config_fingerprint(cfg))
    atomic_write_text(state, json.dumps(fingerprint_sources.fn(str(config)), indent=1, sort_keys=True))


def test_the_refresh_schedule_fires_and_a_worker_runs_it(deployed, scheduler_server):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
    from prefect.client.schemas.filters import FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Scheduled

    clone, url, env = deployed
    with _client(url) as client:
        refresh = client.read_deployment_by_name("textme-refresh/refresh")
        only_refresh = DeploymentFilter(id=DeploymentFilterId(any_=[refresh.id]))
        scheduled = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
        deadline = time.monotonic() + 90
        runs = []
        while len(runs) < 2 and time.monotonic() < deadline:
            runs = client.read_flow_runs(deployment_filter=only_refresh, flow_run_filter=scheduled)
            time.sleep(1)
        assert len(runs) >= 2, "no scheduled refresh runs: " + scheduler_server[2].read_text()[-2000:]
        assert all(r.auto_scheduled and r.parameters == refresh.parameters for r in runs)
        # the scheduler plans runs an hour apart from now on: move the first one to now
        first = min(runs, key=lambda r: r.next_scheduled_start_time)
        assert first.next_scheduled_start_time > datetime.now(timezone.utc)
        client.set_flow_run_state(first.id, Scheduled(scheduled_time=datetime.now(timezone.utc)), force=True)

    _seed_refresh_state(clone / "configs" / "demo.yaml")
    worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", "textme-local",
                             "--type", "process", "--run-once", "--limit", "1"], cwd=clone, env=env,
                            capture_output=True, text=True, timeout=600)
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    with _client(url) as client:
        done = client.read_flow_run(first.id)
    assert done.state.is_completed(), f"{done.state}: {worker.stdout[-3000:]}{worker.stderr[-3000:]}"
    assert done.deployment_id == refresh.id and done.parameters == {"config": "configs/demo.yaml", "force": False}
