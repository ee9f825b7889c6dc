"""`make serve` for real: a Prefect server on 127.0.0.1, the deployments of prefect.yaml, a process
worker, `prefect deployment run 'build-ieiw/demo'` reaching Completed, and Ctrl-C stopping it all."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ieiw_testing import REPO, free_port, ieiw_env

from ieiw.schemas.manifest import load_manifest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


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


def serve_processes(*markers: str) -> list[str]:
    """Every live process of one `make serve` (found by its port or its pool name), in any session."""
    lines = subprocess.run(["ps", "-eww", "-o", "pid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in lines.splitlines()
            if any(m in line for m in markers) and "ps -eww" not in line and " Z" not in line]


def start_serve(tmp_path: Path, port: int, pool: str, api_url: str | None = None) -> tuple[subprocess.Popen, dict]:
    """`make serve` as a terminal starts it: its own process group (so Ctrl-C reaches the whole group)."""
    env = ieiw_env() | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "IEIW_WORK_POOL": pool,
        "PORT": str(port),
    }
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(["make", "-s", "serve", f"BIN={BIN}", f"PORT={port}"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, env


def ctrl_c(proc: subprocess.Popen, markers: tuple[str, ...], log: Path) -> float:
    """SIGINT to the process group, as a terminal's Ctrl-C does; returns how long until all are gone."""
    running = serve_processes(*markers)
    assert len(running) >= 3, f"make, the script and the worker run before Ctrl-C: {running}\n{log.read_text()[-2000:]}"
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    while serve_processes(*markers) and time.monotonic() - start < 30:
        time.sleep(0.2)
    elapsed = time.monotonic() - start
    left = serve_processes(*markers)
    stop_group(proc)
    assert not left, f"still running {elapsed:.0f} s after Ctrl-C: {left}"
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    return elapsed


READ_ARTIFACTS = """
import asyncio, json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from ieiw.schemas.manifest import load_manifest

async def main():
    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=sys.argv[1:])))
        print(json.dumps([{"key": a.key, "type": a.type, "data": a.data if isinstance(a.data, str) else json.dumps(a.data)}
                          for a in found]))

asyncio.run(main())
"""


def read_artifacts(env: dict[str, str], keys: list[str]) -> list[dict]:
    """The artifacts with these keys, read back through the Prefect client from the server in ``env``."""
    proc = subprocess.run([sys.executable, "-c", READ_ARTIFACTS, *keys], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def healthy(api: str) -> bool:
    try:
        return urllib.request.urlopen(f"{api}/health", timeout=1).status == 200
    except OSError:
        return False


def status_of(request: urllib.request.Request) -> int:
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code


def assert_server_is_guarded(api: str, auth: str) -> None:
    """`make serve`'s server: no answer without the auth string, no CORS for another origin, and a change
    needs Prefect's CSRF token, so a web page open in a browser on this machine cannot start runs."""
    body = json.dumps({}).encode()
    post = {"Content-Type": "application/json"}
    basic = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ieiw:guess").decode()}
    assert status_of(urllib.request.Request(f"{api}/csrf-token?client=probe")) == 401, "no auth string"
    assert status_of(urllib.request.Request(f"{api}/csrf-token?client=probe", headers=wrong)) == 401
    assert status_of(urllib.request.Request(f"{api}/csrf-token?client=probe", headers=basic)) == 200
    assert status_of(urllib.request.Request(f"{api}/deployments/filter", body, post)) in (401, 403)
    assert status_of(urllib.request.Request(f"{api}/deployments/filter", body, post | basic)) == 403, "no CSRF token"
    preflight = urllib.request.Request(f"{api}/deployments/filter", method="OPTIONS", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert status_of(preflight) == 400, "another origin's preflight is refused"


def test_serve_deploy_run_demo_and_ctrl_c(tmp_path, sample_root):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    serve, env = start_serve(tmp_path, port, "ieiw-test")
    client_env = env | {"PREFECT_API_URL": api}

    def prefect(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "prefect"), *args], cwd=tmp_path, env=client_env,
                              capture_output=True, text=True, timeout=timeout)

    try:
        wait_for(lambda: healthy(api), 90, "the Prefect server")
        auth_file = tmp_path / "prefect" / "serve-auth"
        assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
        client_env["PREFECT_API_AUTH_STRING"] = auth_file.read_text().strip()
        assert_server_is_guarded(api, client_env["PREFECT_API_AUTH_STRING"])
        wait_for(lambda: prefect("deployment", "inspect", "build-ieiw/demo").returncode == 0, 120,
                 "the demo deployment")
        wait_for(lambda: "Worker" in (tmp_path / "serve.log").read_text(), 60, "the worker")
        scorers = [{"backend": "proxy"}, {"backend": "knn-giqa", "reference": str(tmp_path / "giqa"),
                                          "generate": {"images": 20}}]
        params = {"out_dir": str(tmp_path / "out"),
                  "overrides": {"removal.source.root": str(sample_root), "scoring.scorers": scorers}}
        run = prefect("deployment", "run", "build-ieiw/demo", "--params", json.dumps(params), "--watch",
                      "--watch-timeout", "240", timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Completed" in run.stdout, run.stdout
        assert len(serve_processes(f"--port {port}")) == 1, "make serve started its server"
        elapsed = ctrl_c(serve, (f"PORT={port}", f"--port {port}", "--pool ieiw-test"), tmp_path / "serve.log")
        assert elapsed < 10, f"Ctrl-C took {elapsed:.1f} s"
    finally:
        stop_group(serve)
    manifest = load_manifest(tmp_path / "out" / "ieiw")
    assert manifest["units"], "the deployed run wrote shards"
    assert (tmp_path / "out" / "stats.json").exists()


def test_serve_uses_a_running_server_instead_of_starting_one(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env = ieiw_env() | {"PREFECT_HOME": str(tmp_path / "own"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_for(lambda: healthy(api), 90, "our own Prefect server")
        serve_port = free_port()
        serve, _ = start_serve(tmp_path, serve_port, "ieiw-own", api_url=api)
        try:
            wait_for(lambda: "Worker" in (tmp_path / "serve.log").read_text(), 120, "the worker")
            log = (tmp_path / "serve.log").read_text()
            assert f"using the Prefect server at {api}" in log
            assert not serve_processes(f"--port {serve_port}"), "no second server"
            elapsed = ctrl_c(serve, (f"PORT={serve_port}", "--pool ieiw-own"), tmp_path / "serve.log")
            assert elapsed < 10
            assert healthy(api), "make serve's Ctrl-C leaves a server it did not start alone"
        finally:
            stop_group(serve)
    finally:
        stop_group(server)
