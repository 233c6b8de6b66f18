"""Progress you can watch: terminal bars, a progress artifact per long stage under Prefect,
and a log line per training epoch."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

import tasks.progress as progress
from tasks.config import load_config
from tests.pipeline.helpers import one_encoder_config, run_pipeline


@pytest.fixture
def terminal(monkeypatch) -> io.StringIO:
    """Bars forced on, drawn to a terminal-like console that records its output."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    monkeypatch.setenv("TEXTME_PROGRESS", "1")
    monkeypatch.setattr(progress, "_console", lambda: console)
    return out


def test_bars_show_items_rate_and_time_left_and_go_away(terminal):
    with progress.stage_progress("embed clip/modal", 300, "items") as bar:
        bar.advance(100)
        bar.advance(100)
        [task] = progress._BARS._progress.tasks
        assert (task.description, task.completed, task.total, task.fields["unit"]) == ("embed clip/modal", 200, 300,
                                                                                     "items")
        progress._BARS._progress.refresh()
        shown = terminal.getvalue()
        assert "embed clip/modal" in shown and "200/300" in shown and "items/s" in shown
        assert "embed clip/modal: 200/300 items, " in bar.describe() and "s left" in bar.describe()
    assert progress._BARS._progress is None  # the last bar gone: the live display stops


def test_training_bar_carries_the_loss(terminal):
    with progress.stage_progress("train clip (textme)", 4, "epochs") as bar:
        bar.update(3, loss=0.5)
        progress._BARS._progress.refresh()
        assert "3/4" in terminal.getvalue() and "loss 0.5000" in terminal.getvalue()


def test_off_and_outside_a_terminal_draw_nothing(monkeypatch):
    for value in ("0", ""):
        monkeypatch.setenv("TEXTME_PROGRESS", value)
        with progress.stage_progress("embed x/text", 10) as bar:
            bar.advance(10)
            assert progress._BARS._progress is None  # pytest's stderr is no terminal


def test_long_stages_publish_progress_artifacts_and_training_logs_every_epoch(
        tmp_path, assets, prefect_api, monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, \
        LogFilterFlowRunId

    monkeypatch.setattr(progress, "ARTIFACT_AFTER_S", 0.0)  # every stage counts as long here
    config = one_encoder_config(tmp_path, assets, evaluation=False)
    run_id = run_pipeline(config)
    epochs = load_config(config).training.epochs
    wanted = [f"train toy_image (textme): epoch {epoch}/{epochs} loss " for epoch in range(1, epochs + 1)]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        for _ in range(30):  # logs reach the API in batches, a moment after the run
            messages, page = [], None
            while page is None or len(page) == 200:
                page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                                        limit=200, offset=len(messages))
                messages += [log.message for log in page]
            if all(any(m.startswith(w) for m in messages) for w in wanted):
                break
            time.sleep(1)
    bars = {a.description.split(":")[0]: a for a in artifacts if a.type == "progress"}
    assert {"embed toy_image/modal", "embed toy_image/text", "embed pivot/text", "train toy_image (textme)"} \
        <= set(bars), sorted(bars)
    assert all(float(a.data) == 100.0 for a in bars.values())
    assert f"{epochs}/{epochs} epochs" in bars["train toy_image (textme)"].description
    for w in wanted:
        assert any(m.startswith(w) for m in messages), (w, [m for m in messages if m.startswith("train")])
