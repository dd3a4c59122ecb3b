"""Shared fixtures: the one Kafka broker of a test session, and small helpers."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
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

from streamwatch.detectors.calibration import CACHE_ENV  # noqa: E402

# Calibrated thresholds go to a file of this session's own, never one left by another run:
# the tests, and the commands they start, share it.
_calibration = Path(tempfile.mkdtemp(prefix="streamwatch-calibration-"))
atexit.register(shutil.rmtree, _calibration, ignore_errors=True)
os.environ[CACHE_ENV] = str(_calibration / "thresholds.json")


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
