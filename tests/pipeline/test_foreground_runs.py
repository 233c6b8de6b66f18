"""A flow run started at the terminal (`textme run`, `evaluate`, `refresh`) sends no
Prefect heartbeats unless the user set a heartbeat frequency (flows/cli.py
`_foreground_settings`): Prefect 3.8 waits for the heartbeat thread's current 1-s sleep
at the end of every run."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow
from prefect.flow_engine import BaseFlowRunEngine
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from flows.cli import _run_flow


@flow
def add_one(x: int) -> int:
    return x + 1


@pytest.fixture
def heartbeats(monkeypatch) -> list:
    """The flow runs a heartbeat was sent for (Prefect sends one as a run starts)."""
    sent: list = []
    monkeypatch.setattr(BaseFlowRunEngine, "_emit_flow_run_heartbeat",
                        lambda self, *args, **kwargs: sent.append(self.flow_run.id))
    return sent


def test_a_terminal_run_sends_no_heartbeats(prefect_api, heartbeats):
    state = _run_flow(add_one, None, Path("unused.yaml"), {"x": 1})
    assert state.result() == 2 and heartbeats == []
    add_one(1)  # outside the CLI, Prefect's default is untouched: a heartbeat as the run starts
    assert len(heartbeats) == 1


def test_a_heartbeat_frequency_the_user_set_is_kept(prefect_api, heartbeats):
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}):
        state = _run_flow(add_one, None, Path("unused.yaml"), {"x": 1})
    assert state.result() == 2 and heartbeats == [state.state_details.flow_run_id]
