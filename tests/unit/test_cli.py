from __future__ import annotations

import subprocess
import sys

import streamwatch
from tests.conftest import ROOT


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamwatch", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_help_explains_each_command() -> None:
    top = _cli("--help")
    assert top.returncode == 0
    for command in ("run", "check-config", "demo"):
        assert command in top.stdout
        sub = _cli(command, "--help")
        assert sub.returncode == 0
        assert "usage: streamwatch" in sub.stdout


def test_version() -> None:
    assert _cli("--version").stdout.strip() == f"streamwatch {streamwatch.__version__}"


def test_demo_prints_a_summary_with_the_detection() -> None:
    result = _cli("demo", "--events", "12000", "--drift-at", "8000")
    assert result.returncode == 0, result.stderr
    assert "demo-predictions: 12,000 valid events" in result.stdout
    assert "rejected: 12 (" in result.stdout
    assert "ALARM fraud-detector 2026.11.1 feature=amount" in result.stdout
    assert "BEFORE" not in result.stdout


def test_public_names() -> None:
    public = {n for n in vars(streamwatch) if not n.startswith("_")} - {
        "config",
        "errors",
        "cli",
        "app",
        "decode",
        "monitor",
        "detectors",
        "exporter",
        "worker",
        "source",
        "deadletter",
        "demo",
        "simulation",
    }
    assert set(streamwatch.__all__) == public | {"__version__"}
