"""Fixtures of the crawler tests: a loopback fixture server, a connect audit, configs, a photo (image bytes:
``crawl_images``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from crawl_server import FixtureServer, static

from ieiw.crawlers.config import HttpConfig
from ieiw.samples.crawl import synthetic_photo

ROBOTS = b"User-agent: *\nDisallow: /private/\n"

# Every socket.connect of the test process, recorded by an audit hook (hooks cannot be removed, so
# one is installed per process and tests read/clear the list). This is how "refused before
# connecting" is asserted for real: a connect to 10.0.0.1 would show up here.
CONNECTS: list[tuple] = []
_RECORDING = [False]


def _audit(event: str, args: tuple) -> None:
    if _RECORDING[0] and event == "socket.connect":
        CONNECTS.append(args[1])


sys.addaudithook(_audit)


@pytest.fixture
def connects():
    CONNECTS.clear()
    _RECORDING[0] = True
    yield CONNECTS
    _RECORDING[0] = False
    CONNECTS.clear()


@pytest.fixture
def server():
    srv = FixtureServer().start()
    srv.routes["/robots.txt"] = static(ROBOTS, "text/plain")
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def http_config(server, tmp_path: Path) -> HttpConfig:
    """Network mode, only the fixture server allow-listed, fast timeouts and no rate-limit wait."""
    return HttpConfig(
        cache_dir=str(tmp_path / "cache"),
        replay_only=False,
        allow_private_hosts=(server.hostport,),
        min_interval_s=0.0,
        connect_timeout_s=1.0,
        read_timeout_s=1.0,
        retries=2,
        backoff_factor=0.05,
        retry_after_max_s=2,
        contact="tests@example.org",
    )


@pytest.fixture
def photo() -> np.ndarray:
    return synthetic_photo(seed=7, width=320, height=240)
