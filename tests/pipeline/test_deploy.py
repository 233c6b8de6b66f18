"""`prefect deploy --all` works against a local server with the shipped prefect.yaml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline.helpers import REPO

PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.mark.slow
def test_prefect_deploy_all(prefect_api, subprocess_env):
    env = {**subprocess_env, "PREFECT_CLI_PROMPT": "false"}

    def prefect(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    pool = prefect("work-pool", "create", "textme-local", "--type", "process")
    assert pool.returncode == 0 or "already exists" in pool.stdout + pool.stderr, pool.stdout + pool.stderr
    deployed = prefect("deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        pipeline = client.read_deployment_by_name("textme-pipeline/pipeline")
        refresh = client.read_deployment_by_name("textme-refresh/refresh")
        evaluate = client.read_deployment_by_name("textme-evaluate/evaluate")
    assert pipeline.parameters == {"config": "configs/demo.yaml"}
    assert pipeline.work_pool_name == "textme-local" and "textme" in pipeline.tags
    assert [s.schedule.interval.total_seconds() for s in refresh.schedules] == [3600.0]
    assert refresh.parameters == {"config": "configs/demo.yaml", "force": False}
    assert evaluate.entrypoint == "flows/evaluate.py:evaluate_only"
    # the worker would run from the project folder (recorded by `prefect deploy`)
    steps = [next(iter(step.values())) for step in pipeline.pull_steps]
    assert any(Path(s.get("directory", "")) == REPO for s in steps), pipeline.pull_steps
