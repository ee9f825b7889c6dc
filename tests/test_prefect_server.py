"""`make serve` for real: a Prefect server on 127.0.0.1, the deployments of prefect.yaml, a process
worker, and `prefect deployment run 'build-ieiw/demo'` reaching Completed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ieiw_testing import REPO, ieiw_env

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def stop_group(proc: subprocess.Popen) -> None:
    """The worker can be slow to stop (docs/environment.md): SIGINT, then SIGTERM, then SIGKILL."""
    for sig, grace in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            continue


def test_serve_deploy_and_run_demo(tmp_path, sample_root):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = ieiw_env() | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "IEIW_WORK_POOL": "ieiw-test",
        "BIN": str(BIN),
        "PORT": str(port),
    }
    env.pop("PREFECT_API_URL", None)
    log = open(tmp_path / "serve.log", "w")
    serve = subprocess.Popen(["bash", str(REPO / "scripts" / "serve.sh")], cwd=tmp_path, env=env,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client_env = env | {"PREFECT_API_URL": api}

    def prefect(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "prefect"), *args], cwd=tmp_path, env=client_env,
                              capture_output=True, text=True, timeout=timeout)

    try:
        def healthy() -> bool:
            try:
                return urllib.request.urlopen(f"{api}/health", timeout=1).status == 200
            except OSError:
                return False

        wait_for(healthy, 90, "the Prefect server")
        wait_for(lambda: prefect("deployment", "inspect", "build-ieiw/demo").returncode == 0, 120,
                 "the demo deployment")
        wait_for(lambda: "Worker" in (tmp_path / "serve.log").read_text(), 60, "the worker")
        params = {"out_dir": str(tmp_path / "out"), "overrides": {"removal.source.root": str(sample_root)}}
        run = prefect("deployment", "run", "build-ieiw/demo", "--params", json.dumps(params), "--watch",
                      "--watch-timeout", "240", timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Completed" in run.stdout, run.stdout
    finally:
        stop_group(serve)
        log.close()
    manifest = json.loads((tmp_path / "out" / "ieiw" / "manifest.json").read_text())
    assert manifest["units"], "the deployed run wrote shards"
    assert (tmp_path / "out" / "stats.json").exists()
