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


def _config(tmp_path: Path, **sections: object) -> Path:
    config = {
        "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}", "connect_timeout_seconds": 1},
        "models": [{"name": "m", "task": "binary", "features": [{"name": "x", "type": "numeric"}]}],
        "exporter": {"port": 0},
        **sections,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_unreachable_broker_is_one_clear_message_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("run", "--config", str(_config(tmp_path)))
    assert result.returncode == 2, result.stderr
    assert "cannot reach Kafka at 127.0.0.1:" in result.stderr
    assert "kafka.connect_timeout_seconds=1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_one_clear_message_and_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path, exporter={"address": "127.0.0.1", "port": port})
        result = run_cli("run", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in result.stderr
    assert "exporter.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_producer_refuses_a_rate_or_round_of_zero() -> None:
    from tests.conftest import run_cli

    for flag in ("--rate", "--events"):
        result = run_cli("demo", "--produce-only", "--bootstrap-servers", "127.0.0.1:1", flag, "0")
        assert result.returncode == 2
        assert "--rate > 0 and --events > 0" in result.stderr


def test_a_gate_usage_error_is_cannot_ask_not_wait() -> None:
    result = run_cli("gate", "--config", "x.yaml", "--prometheus", "http://127.0.0.1:1")
    assert result.returncode == 3, result.stderr
    assert "the following arguments are required: --model, --candidate" in result.stderr
    other = run_cli("replay", "--config", "x.yaml")  # every other command keeps argparse's 2
    assert other.returncode == 2, other.stderr


def test_gate_at_takes_a_unix_time_only() -> None:
    for bad in ("nan", "inf", "-5", "yesterday"):
        result = run_cli(
            "gate", "--config", "x.yaml", "--prometheus", "http://127.0.0.1:1",
            "--model", "m", "--candidate", "v2", "--at", bad,
        )  # fmt: skip
        assert result.returncode == 3  # "cannot ask": a pipeline must not read a typo as "wait"
        assert f"argument --at: '{bad}' is not a Unix time in seconds" in result.stderr
