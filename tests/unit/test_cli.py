from __future__ import annotations

import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

import streamwatch
from tests.conftest import ROOT, free_port, run_cli


def test_help_explains_each_command() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    for command in ("run", "check-config", "demo"):
        assert command in top.stdout
        sub = run_cli(command, "--help")
        assert sub.returncode == 0
        assert "usage: streamwatch" in sub.stdout


def test_version() -> None:
    assert run_cli("--version").stdout.strip() == f"streamwatch {streamwatch.__version__}"


def test_demo_prints_a_summary_with_the_detection() -> None:
    result = run_cli("demo", "--events", "12000", "--drift-at", "8000")
    assert result.returncode == 0, result.stderr
    assert "demo-predictions: 12,000 valid events" in result.stdout
    assert "rejected: 12 (" in result.stdout
    assert "ALARM fraud-detector 2026.11.1 feature=amount" in result.stdout
    assert "BEFORE" not in result.stdout


def test_public_names() -> None:
    public = {
        n
        for n, v in vars(streamwatch).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert set(streamwatch.__all__) == public | {"__version__"}


def test_run_refuses_a_bad_config_before_touching_kafka(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": "192.0.2.1:1"},
                "models": [
                    {"name": "m", "task": "binary", "features": [{"name": "x", "type": "text"}]}
                ],
            }
        )
    )
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert "models.0.features.0.type" in result.stderr


def test_run_names_an_unknown_librdkafka_property(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kafka": {"properties": {"fetch.wait.maximum": 5}},
                "models": [
                    {"name": "m", "task": "binary", "features": [{"name": "x", "type": "numeric"}]}
                ],
                "exporter": {"port": 0},
            }
        )
    )
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert "kafka.properties" in result.stderr
    assert "fetch.wait.maximum" in result.stderr


def test_demo_serves_metrics_while_it_runs() -> None:
    port = free_port()
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamwatch",
            "demo",
            "--events",
            "400000",
            "--metrics-port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    seen = 0.0
    try:
        while demo.poll() is None and not seen:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                time.sleep(0.05)
                continue
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name == "streamwatch_events_total" and s.labels["model"]:
                        seen = s.value
    finally:
        demo.kill()
        demo.wait()
        assert demo.stdout is not None
        demo.stdout.close()
    assert seen > 0
