"""The pipeline with its embedding cache on S3 (a moto server on 127.0.0.1 started by the
test): a run killed after some segments are committed resumes to the results of a run
with a local cache."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from tasks.config import load_config
from tests.pipeline.helpers import REPO, run_pipeline, write_mini_config
from tests.pipeline.test_resume import results

BUCKET = "textme-test"


@pytest.fixture
def s3_endpoint(monkeypatch):
    """A moto S3 server on a free local port, with a bucket; the AWS environment that
    s3fs (through botocore) reads points at it, with dummy credentials."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    try:
        yield env, fs
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def with_cache(config, cache: str):
    doc = yaml.safe_load(config.read_text())
    doc["cache"] = cache
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


def test_s3_cache_run_killed_mid_way_resumes_to_the_local_cache_results(
    prefect_api, assets, tmp_path, subprocess_env, s3_endpoint
):
    import tests.pipeline.slow_toy  # noqa: F401  registers "slow-toy" here too

    env_s3, fs = s3_endpoint
    small = {"n_captions": 48, "epochs": 2, "n_eval": 16, "encoder_kind": "slow-toy"}
    on_s3 = with_cache(write_mini_config(tmp_path / "s3", assets, **small), f"s3://{BUCKET}/cache")
    local = write_mini_config(tmp_path / "local", assets, **small)
    assert load_config(on_s3).cache == f"s3://{BUCKET}/cache"

    env = {**subprocess_env, **env_s3, "TEXTME_TEST_ENCODE_DELAY": "0.2", "TEXTME_EMBED_CHUNK": "16"}
    code = "import sys, tests.pipeline.slow_toy; from flows.pipeline import pipeline; pipeline(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(on_s3)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:  # kill once a few segments are committed
            fs.invalidate_cache()
            if len(fs.glob(f"{BUCKET}/cache/namespaces/*/manifest/*.json")) >= 3:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no segment was committed in time"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    from storage.cache import EmbeddingCache, forget_open_namespaces

    forget_open_namespaces()
    stored = sum(info.count for info in EmbeddingCache(f"s3://{BUCKET}/cache").namespaces())
    assert stored > 0

    resumed = run_pipeline(on_s3)
    baseline = run_pipeline(local)
    assert results(on_s3, resumed) == results(local, baseline)
    reports = EmbeddingCache(f"s3://{BUCKET}/cache").verify()
    assert reports and all(r.ok for r in reports)  # every segment on S3 checks out
