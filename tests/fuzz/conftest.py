"""Hypothesis profiles for the fuzz suite, and a count of examples per reader family at the end of the run.

- ``bounded`` (``make test``): derandomised and small, so CI sees the same examples every run in seconds;
- ``fuzz`` (``make fuzz``, ``IEIW_FUZZ_PROFILE=fuzz``): 10,000 random examples per test; a failure prints the example that caused it and
  ``@reproduce_failure`` to replay it.
"""

from __future__ import annotations

import os

from fuzz_harness import FUZZ_COUNTS
from hypothesis import HealthCheck, settings

SLOW = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
        HealthCheck.filter_too_much, HealthCheck.large_base_example]

settings.register_profile("bounded", max_examples=int(os.environ.get("IEIW_FUZZ_EXAMPLES", "60")),
                          derandomize=True, database=None, deadline=None, suppress_health_check=SLOW,
                          print_blob=True)
settings.register_profile("fuzz", max_examples=int(os.environ.get("IEIW_FUZZ_EXAMPLES", "10000")),
                          derandomize=False, database=None, deadline=None, suppress_health_check=SLOW,
                          print_blob=True)
settings.load_profile(os.environ.get("IEIW_FUZZ_PROFILE", "bounded"))


def pytest_terminal_summary(terminalreporter) -> None:
    if FUZZ_COUNTS:
        terminalreporter.write_line("fuzz: examples per reader family: " + ", ".join(
            f"{family} {n}" for family, n in sorted(FUZZ_COUNTS.items())))
