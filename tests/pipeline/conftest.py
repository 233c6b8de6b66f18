"""Fixtures for the pipeline tests: one real temporary Prefect server per session, the
demo's generated assets built once, and mini configs in temporary folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Prefect binds its console log handler to sys.stderr as it is when prefect.main is
# first imported (it sets logging up then). Import it here, not first inside a CliRunner
# whose stderr closes after its test (the CLI imports prefect lazily): later flow runs
# would log to a closed file.
import prefect.main  # noqa: E402,F401

from tests.pipeline.helpers import K_EDITED, EncodeCounter, run_pipeline, write_mini_config  # noqa: E402


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root>/demo of a workdir where the demo assets were built once (read-only use)."""
    from demo.assets import prepare_demo

    root = tmp_path_factory.mktemp("assets")
    return Path(prepare_demo(root)["root"])


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """A real temporary Prefect server (SQLite) for the whole session; its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture
def mini_config(tmp_path: Path, assets: Path) -> Path:
    return write_mini_config(tmp_path / "mini", assets)


@pytest.fixture
def subprocess_env(prefect_api: str) -> dict[str, str]:
    """Environment for a child process that talks to the session's Prefect server."""
    env = dict(os.environ)
    env.update({
        "PREFECT_API_URL": prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    })
    return env


@pytest.fixture(scope="session")
def demo_pipeline(prefect_api, assets, tmp_path_factory) -> dict:
    """The shipped configs/demo.yaml run once (workdir moved to a temporary folder, the
    session's demo assets copied in): {"config": path, "run_id": id}."""
    import yaml

    from tests.pipeline.helpers import REPO, copy_assets

    data = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    folder = tmp_path_factory.mktemp("demo")
    data["workdir"] = str(folder / "work")
    for spec in data["datasets"].values():  # captions stay where they ship
        spec["source"] = str((REPO / "configs" / spec["source"]).resolve())
    config = folder / "demo.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    copy_assets(assets, folder / "work")  # built once per session; prepare_demo sees READY
    return {"config": config, "run_id": run_pipeline(config)}


@pytest.fixture(scope="session")
def pipeline_runs(prefect_api, assets, tmp_path_factory):
    """One mini config run three times, in order: cold; warm (same config); after
    K_EDITED captions of scenes_image were edited. Run ids, timings and forward-pass
    counts of each, for tests/pipeline/test_flows.py and test_cli.py."""
    from tasks.config import load_config

    mp = pytest.MonkeyPatch()
    try:
        config = write_mini_config(tmp_path_factory.mktemp("flows") / "mini", assets)
        cfg = load_config(config)
        out = {"config": config, "cfg": cfg}

        counter = EncodeCounter(mp)
        out["cold"] = run_pipeline(config)
        out["cold_encoded"] = counter.total()
        counter.calls.clear()
        out["warm"] = run_pipeline(config)
        out["warm_encoded"] = counter.total()

        source = Path(cfg.datasets["scenes_image"].source)
        lines = source.read_text().splitlines()
        for i in range(K_EDITED):  # change the text of k captions, ids unchanged
            row = json.loads(lines[i])
            row["caption"] = f"{row['caption']} (edited {i})"
            lines[i] = json.dumps(row)
        source.write_text("\n".join(lines) + "\n")
        counter.calls.clear()
        out["edit"] = run_pipeline(config)
        out["edit_encoded"] = dict(counter.calls)
        yield out
    finally:
        mp.undo()


