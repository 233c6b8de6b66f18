"""Tiny models of the real classes, built once per test session, and hub isolation.

No test here may reach the network: the hub is switched to offline mode and pointed at an
empty cache folder for every test, and the revision memo is cleared between tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from textme.encoders import hub
from textme.encoders.tiny import build_tiny_clap, build_tiny_open_clip, build_tiny_qwen3


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hub, "_revisions", {})
    yield


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_qwen3(tiny_root) -> Path:
    return build_tiny_qwen3(tiny_root / "qwen3")


@pytest.fixture(scope="session")
def tiny_open_clip(tiny_root) -> dict[str, str]:
    return build_tiny_open_clip(tiny_root / "open-clip")


@pytest.fixture(scope="session")
def tiny_clap(tiny_root) -> Path:
    return build_tiny_clap(tiny_root / "clap")
