"""A failed run says why in its last line: the failing stage's task run name and its own
error (a file, a damaged segment), never a downstream `PENDING`; undecodable items fail
naming the file, or are skipped and counted with `on_bad_item: skip`."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

from flows.cli import app
from tasks.config import load_config
from tests.pipeline.helpers import N_ITEMS, one_encoder_config, rows, run_pipeline

TEXTME = str(Path(sys.executable).parent / "textme")


def invoke(*args) -> tuple[int, str]:
    """(exit status, stderr) of a `textme` command run in this process.

    Not typer's CliRunner: it closes its captured streams afterwards, and Prefect's log
    handler, set up during a flow run inside it, would then write to a closed file."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = app([str(a) for a in args], standalone_mode=False)
    return (code if isinstance(code, int) else 0), err.getvalue()


def items_of(config: Path) -> list[Path]:
    cfg = load_config(config)
    return sorted(Path(next(iter(cfg.datasets.values())).items).iterdir())


def not_a_png(path: Path) -> None:
    path.write_bytes(b"this is not an image\n")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --------------------------------------------------------------------------- the failing stage, named


def test_undecodable_png_fails_the_run_with_one_line_naming_the_file(tmp_path, assets, subprocess_env):
    """The real command, as a user runs it: the last line is the stage's own error."""
    config = one_encoder_config(tmp_path, assets)
    bad = items_of(config)[5]
    not_a_png(bad)
    proc = subprocess.run([TEXTME, "run", str(config)], capture_output=True, text=True, env=subprocess_env,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"error: one-image: run failed: embed-toy_image-modal: toy image encoder: {bad}: not a PNG file"
    assert "PENDING" not in last and "UnfinishedRun" not in proc.stderr


def test_truncated_wav_fails_the_run_naming_the_file(tmp_path, assets, prefect_api):
    config = one_encoder_config(tmp_path, assets, modality="audio")
    bad = items_of(config)[3]
    truncate(bad)
    code, stderr = invoke("run", config)
    assert code == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: one-audio: run failed: embed-toy_audio-modal: toy audio encoder: {bad}: "
                           f"truncated WAV file ("), last


def test_on_bad_item_skip_leaves_them_out_counts_and_names_them(tmp_path, assets, prefect_api):
    config = one_encoder_config(tmp_path, assets, on_bad_item="skip")
    items = items_of(config)
    not_a_png(items[2])
    truncate(items[7])
    run_id = run_pipeline(config)  # completes
    cfg = load_config(config)

    # one embed_log row per committed chunk: together they count and name the skipped items
    logged = [r for r in rows(cfg, "embed_log", run_id) if r["stage"].startswith("embed_items-")]
    assert sum(r["n_skipped"] for r in logged) == 2
    assert [p for r in logged if r["skipped"] for p in r["skipped"].splitlines()] == [str(items[2]), str(items[7])]
    assert sum(r["n_requested"] for r in logged) == N_ITEMS and sum(r["n_computed"] for r in logged) == N_ITEMS - 2
    [offset] = rows(cfg, "offsets", run_id)
    assert offset["n_modal"] == N_ITEMS - 2  # mu_modal from the decodable items only
    assert rows(cfg, "results", run_id)

    # The damaged items are named in the stage's manifest too; a warm run is all cache hits.
    from tasks.workspace import Workspace

    manifests = [m for _, m in Workspace.of(cfg).stage_manifests() if m.get("stage") == "embed_items"]
    assert [m["skipped"] for m in manifests] == [[str(items[2]), str(items[7])]]
    warm = run_pipeline(config)
    assert all(r["n_computed"] == 0 for r in rows(cfg, "embed_log", warm))


def test_a_failure_after_retries_names_the_task_run_and_a_retried_success_is_not_blamed(prefect_api):
    """The flow walks its futures: earliest failed stage first, the others listed; a stage
    that failed once and then succeeded on retry is not reported."""
    from prefect import flow, task

    from tasks.failures import StageFailed, name_failure, result_or_first_failure

    attempts: dict[str, int] = {}

    @task(task_run_name="flaky-{x}", retries=1, retry_delay_seconds=0, on_failure=[name_failure])
    def flaky(x: str) -> str:
        attempts[x] = attempts.get(x, 0) + 1
        if attempts[x] == 1:
            raise ConnectionError(f"{x}: dropped once")
        return x

    @task(task_run_name="broken-{x}", retries=1, retry_delay_seconds=0, on_failure=[name_failure])
    def broken(x: str) -> str:
        raise OSError(f"disk full while writing {x}")

    @task(task_run_name="late-{x}", on_failure=[name_failure])
    def late(x: str, *after) -> str:
        time.sleep(1.5)  # fails after broken-b has failed twice
        raise RuntimeError(f"{x} failed too")

    @task
    def join(*parts: str) -> str:
        return "+".join(parts)

    @flow
    def dag() -> str:
        a = flaky.submit("a")
        b = broken.submit("b")
        c = late.submit("c", a)
        return result_or_first_failure(join.submit(a, b, c), [a, b, c])

    state = dag(return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, StageFailed)
    assert exc.task_run == "broken-b" and isinstance(exc.error, OSError)
    assert str(exc) == "broken-b: OSError: disk full while writing b (also failed: late-c)"
    assert attempts == {"a": 2}


# --------------------------------------------------------------------------- a damaged cache segment


def flip_vector_bytes(cfg, encoder: str, ns: str | None = None) -> list[str]:
    """Flip one byte inside the vectors of every segment of an encoder's modal namespace
    (or of namespace `ns`)."""
    from tasks import keys

    ns = ns or keys.namespace_id(keys.encoder_identity(cfg, encoder, "modal"))
    segments = sorted((Path(cfg.cache) / "namespaces" / ns / "segments").iterdir())
    for seg in segments:
        chunk = seg / "vectors.bin"  # segment format 2 (storage/segments.py)
        data = bytearray(chunk.read_bytes())
        data[100] ^= 0xFF
        chunk.write_bytes(bytes(data))
    return [s.name for s in segments]


def test_damaged_segment_is_one_line_with_the_repair_command(tmp_path, assets, prefect_api):
    config = one_encoder_config(tmp_path, assets)
    run_pipeline(config)
    cfg = load_config(config)
    from tasks.search import current_indexes

    index_ns = current_indexes(cfg)[0]["toy_image"]["namespace"]
    damaged = flip_vector_bytes(cfg, "toy_image")
    repair = f"drop it with `textme cache verify --quarantine {config}` and run again"
    # search reads the index (a namespace of its own), not the modal vectors
    assert invoke("search", config, "a red dog")[0] == 0
    flip_vector_bytes(cfg, "toy_image", index_ns)
    code, stderr = invoke("search", config, "a red dog")
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: search: cache segment ") and repair in lines[0], lines

    manifest = Path(cfg.evaluation[0].manifest)  # one row less: the evaluation must read vectors again
    manifest.write_text("\n".join(manifest.read_text().splitlines()[:-1]) + "\n")

    for command in ("evaluate", "run"):
        code, stderr = invoke(command, config)
        assert code == 1, stderr[-3000:]
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error: one-image: run failed: evaluate-image_retrieval: cache segment "), last
        assert any(f"segment {s} of namespace" in last for s in damaged) and repair in last, last
        assert "PENDING" not in last


# --------------------------------------------------------------------------- a killed run's leftovers


def test_a_killed_writers_temporary_files_are_removed_by_the_next_run(tmp_path, assets, prefect_api):
    import os
    import time

    from tasks.workspace import TEMP_GRACE_S, Workspace

    config = one_encoder_config(tmp_path, assets, evaluation=False)
    run_pipeline(config)
    ws = Workspace.of(load_config(config))
    old = [ws.manifests / ".embed-abc.json.k3j2.tmp", ws.configs / ".f00.json.x1.tmp"]
    fresh = ws.manifests / ".train-def.json.q9.tmp"  # a writer still at work, maybe
    for path in (*old, fresh):
        path.write_text('{"half": ')
    long_ago = time.time() - TEMP_GRACE_S - 60
    for path in old:
        os.utime(path, (long_ago, long_ago))
    run_pipeline(config)
    assert not any(p.exists() for p in old) and fresh.exists()
    assert list(ws.manifests.glob(".*.tmp")) == [fresh]


# --------------------------------------------------------------------------- duplicate caption ids


def _duplicate_an_id(config: Path) -> tuple[str, int]:
    """Give caption row 7 the id of row 2 (texts stay different); (that id, rows)."""
    import json

    source = Path(next(iter(load_config(config).datasets.values())).source)
    lines = source.read_text().splitlines()
    first, later = json.loads(lines[2]), json.loads(lines[7])
    later["caption_id"] = first["caption_id"]
    lines[7] = json.dumps(later)
    source.write_text("\n".join(lines) + "\n")
    return first["caption_id"], len(lines)


def test_duplicate_ids_are_kept_and_counted_by_default(tmp_path, assets, prefect_api):
    from tasks.workspace import Workspace

    config = one_encoder_config(tmp_path, assets, evaluation=False)
    _, n = _duplicate_an_id(config)
    run_pipeline(config)
    cfg = load_config(config)
    [ingest] = [m for _, m in Workspace.of(cfg).stage_manifests() if m.get("stage") == "ingest"]
    assert ingest["n_captions"] == n and ingest["n_duplicate_ids"] == 1 and ingest["n_duplicate_id_dropped"] == 0


def test_on_duplicate_id_fail_is_one_line_before_anything_is_written(tmp_path, assets):
    config = one_encoder_config(tmp_path, assets, evaluation=False, on_duplicate_id="fail")
    caption_id, _ = _duplicate_an_id(config)
    code, stderr = invoke("run", config)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1, stderr
    assert f"1 caption id in column 'caption_id' with different texts: '{caption_id}' (rows 2, 7)" in lines[0]
    assert not Path(load_config(config).workdir).exists()
