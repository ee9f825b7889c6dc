"""Shared fixtures: an isolated Prefect home, a small synthetic PhraseCut sample, build configs, and a
helper that runs the real `ieiw` command in a subprocess."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ieiw_testing import write_config


@pytest.fixture(scope="session", autouse=True)
def prefect_home(tmp_path_factory) -> Iterator[Path]:
    """Tests never touch the user's ~/.prefect or ~/.cache and never phone home."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"  # first start migrates the DB
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["IEIW_CACHE_DIR"] = str(tmp_path_factory.mktemp("ieiw-cache"))  # model-file digests, not ~/.cache
    yield home
    # Stop the temporary Prefect server an in-process flow started while pytest still captures output:
    # left to Prefect's atexit hook, its goodbye line is written to a closed stream ("Logging error").
    # Prefect's log and event shippers go first, while the server can still take their last items.
    services = sys.modules.get("prefect._internal.concurrency.services")
    if services is not None:
        services._QueueServiceBase.drain_all(timeout=10)
    server = sys.modules.get("prefect.server.api.server")
    for instance in list(getattr(getattr(server, "SubprocessASGIServer", None), "_instances", {}).values()):
        instance.stop()


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """30 synthetic scenes at 160x120, generated once per session."""
    from ieiw.samples.phrasecut import make_phrasecut_sample

    return make_phrasecut_sample(tmp_path_factory.mktemp("phrasecut") / "VGPhraseCut_v0", 30, 7, 160, 120)


@pytest.fixture
def make_config(tmp_path, sample_root):
    def make(root: Path | None = None, out: Path | None = None, name: str = "build.yaml", **top) -> Path:
        return write_config(tmp_path / name, root or sample_root, out or tmp_path / "out", **top)

    return make


