"""Real lama-cleaner 1.2.5 and IOPaint 1.6.0 servers, started from their side venvs (`make lama-cleaner`,
`make iopaint`; `make test-integration` makes both first) on 127.0.0.1 with free ports.

lama-cleaner runs ``--model lama`` on a tiny TorchScript model with big-lama.pt's signature, named by
``LAMA_MODEL_URL`` (a local path is loaded as is: no download), so requests go through its real LaMa
code path, HD strategies included. IOPaint runs ``--model cv2`` (no weights) and, for parity, ``--model
lama`` on the same tiny model (put where IOPaint looks for big-lama.pt). Both get throw-away
cache folders and offline flags, and are stopped (SIGTERM, then SIGKILL) at teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from ieiw_testing import REPO, free_port

START_TIMEOUT = 180  # seconds; a cold start imports torch, diffusers, transformers


def side_venv(name: str) -> Path:
    """The venv `make <name>` made: $IEIW_<NAME>_VENV, else the one scripts/side_venv.sh names."""
    variable = "IEIW_" + name.upper().replace("-", "_") + "_VENV"
    if os.environ.get(variable):
        path = Path(os.environ[variable])
    else:
        proc = subprocess.run([str(REPO / "scripts" / "side_venv.sh"), "--path", name],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"no {name} side venv: {proc.stderr.strip()} (make test-integration installs it)")
        path = Path(proc.stdout.strip())
    if not (path / "bin" / "python").exists():
        pytest.fail(f"{variable}={path} is not a venv (run make {name})")
    return path


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, probe: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited {self.proc.returncode} before answering:\n{self.log_text()[-3000:]}")
            try:
                if requests.get(self.url + probe, timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"{self.name} did not answer {self.url}{probe} in {START_TIMEOUT} s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_server(name: str, command: list[str], folder: Path, probe: str, env: dict[str, str] | None = None) -> Server:
    cache = folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    full_env.update({
        "XDG_CACHE_HOME": str(cache), "HF_HOME": str(cache / "huggingface"), "TORCH_HOME": str(cache / "torch"),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {}),
    })
    port = free_port()
    log = folder / f"{name}.log"
    with open(log, "wb") as handle:
        proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], cwd=folder, env=full_env,
                                stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(name, f"http://127.0.0.1:{port}", proc, log)
    server.wait_ready(probe)
    return server


@pytest.fixture(scope="session")
def tiny_lama_path(tmp_path_factory) -> Path:
    from tiny_lama import write_tiny_lama

    return write_tiny_lama(tmp_path_factory.mktemp("tiny-lama") / "tiny-lama.pt")


@pytest.fixture(scope="session")
def lama_cleaner_server(tmp_path_factory, tiny_lama_path):
    venv = side_venv("lama-cleaner")
    server = start_server(
        "lama-cleaner", [str(venv / "bin" / "lama-cleaner"), "--model", "lama", "--device", "cpu"],
        tmp_path_factory.mktemp("lama-cleaner-server"), "/", env={"LAMA_MODEL_URL": str(tiny_lama_path)})
    assert f"Loading model from: {tiny_lama_path}" in server.log_text(), "the tiny model, not a download"
    yield server
    server.stop()


@pytest.fixture(scope="session")
def iopaint_server(tmp_path_factory):
    venv = side_venv("iopaint")
    folder = tmp_path_factory.mktemp("iopaint-server")
    server = start_server(
        "iopaint", [str(venv / "bin" / "iopaint"), "start", "--model", "cv2", "--device", "cpu",
                    "--model-dir", str(folder / "models")], folder, "/api/v1/server-config")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def iopaint_lama_server(tmp_path_factory, tiny_lama_path):
    """IOPaint's LaMa code path on the tiny model. IOPaint lists only models it finds downloaded (a
    LAMA_MODEL_URL path does not count), so the tiny model sits where it looks for big-lama.pt:
    torch hub's checkpoints folder under TORCH_HOME. Found there, it is loaded without a download."""
    venv = side_venv("iopaint")
    folder = tmp_path_factory.mktemp("iopaint-lama-server")
    checkpoint = folder / "cache" / "torch" / "hub" / "checkpoints" / "big-lama.pt"
    checkpoint.parent.mkdir(parents=True)
    shutil.copyfile(tiny_lama_path, checkpoint)
    server = start_server(
        "iopaint-lama", [str(venv / "bin" / "iopaint"), "start", "--model", "lama", "--device", "cpu",
                         "--model-dir", str(folder / "models")], folder, "/api/v1/server-config")
    assert f"Loading model from: {checkpoint}" in server.log_text(), "the tiny model, not a download"
    yield server
    server.stop()
