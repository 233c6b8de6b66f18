"""Shared fixtures for the demo tests: one asset build per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.assets import prepare_demo
from demo.world import World

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"


@pytest.fixture(scope="session")
def world() -> World:
    return World()


@pytest.fixture(scope="session")
def demo_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with the demo assets built once for the whole session (read-only use)."""
    workdir = tmp_path_factory.mktemp("workdir")
    prepare_demo(workdir)
    return workdir


@pytest.fixture(scope="session")
def demo_assets(demo_workdir: Path) -> dict:
    return prepare_demo(demo_workdir)
