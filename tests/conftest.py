"""Shared fixtures: the one Kafka broker of a test session, and small helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# No wall-clock limits in tests: these machines are shared and noisy. Hypothesis's deadline
# and its too-slow health check are both wall-clock thresholds.
settings.register_profile(
    "streamwatch", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("streamwatch")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import kafka_local  # noqa: E402  (stdlib-only script, imported by path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker: STREAMWATCH_TEST_BOOTSTRAP if set, else one local KRaft broker."""
    external = os.environ.get("STREAMWATCH_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    with kafka_local.LocalKafka() as broker:
        yield broker.bootstrap_servers


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``streamwatch ARGS`` as a separate process, from the repository's root."""
    return subprocess.run(
        [sys.executable, "-m", "streamwatch", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
