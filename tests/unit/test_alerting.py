"""The shipped Prometheus rules and Alertmanager routing, checked by the real tools."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from prometheus_client import generate_latest

from streamwatch.app import build
from streamwatch.config import parse_settings
from streamwatch.demo import run_in_memory
from streamwatch.simulation import DEMO_CONFIG, Scenario
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "streamwatch.rules.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"


def _tool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, input=stdin, check=False)


def _alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_the_rules_and_the_config() -> None:
    rules = _tool("promtool", "check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _tool("promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_fires_and_stays_quiet_in_promtool() -> None:
    tests = DEPLOY / "prometheus" / "tests" / "streamwatch.test.yml"
    result = _tool("promtool", "test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
    names = [t["name"] for t in yaml.safe_load(tests.read_text())["tests"]]
    for rule in _alerts():
        assert f"{rule['alert']} fires" in names
        assert f"{rule['alert']} stays quiet" in names


def test_every_alert_is_complete_and_has_its_runbook() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {h.lower() for h in re.findall(r"^## (\w+)$", runbooks, flags=re.MULTILINE)}
    for rule in _alerts():
        name = str(rule["alert"])
        assert re.fullmatch(r"Streamwatch[A-Z][A-Za-z]+", name)
        labels, notes = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(notes, dict)
        assert labels["severity"] in ("critical", "warning")
        assert {"summary", "description", "runbook_url"} <= set(notes)
        assert notes["runbook_url"] == f"docs/runbooks.md#{name.lower()}"
        assert name.lower() in anchors, f"docs/runbooks.md has no section {name}"
        assert "for" in rule, f"{name}: choose its for: deliberately"


def test_alertmanager_config_and_routes() -> None:
    check = _tool("amtool", "check-config", str(ALERTMANAGER))
    assert check.returncode == 0, check.stdout + check.stderr
    cases = {
        ("severity=critical", "alertname=StreamwatchFeatureDrift", "model=fraud"): "pager",
        ("severity=critical", "alertname=StreamwatchPredictionsStale", "model=fraud"): "pager",
        ("severity=warning", "alertname=StreamwatchPredictionDrift", "model=fraud"): "ticket",
        ("severity=info", "alertname=Other"): "ticket",
    }
    for labels, receiver in cases.items():
        routed = _tool(
            "amtool",
            "config",
            "routes",
            "test",
            "--config.file",
            str(ALERTMANAGER),
            "--verify.receivers",
            receiver,
            *labels,
        )
        assert routed.returncode == 0, (labels, routed.stdout + routed.stderr)


@pytest.fixture(scope="module")
def demo_scrape() -> str:
    app = build(parse_settings(DEMO_CONFIG))
    run_in_memory(app, Scenario(events=12_000, drift_at=8_000))
    return generate_latest(app.registry).decode()


def test_promtool_finds_nothing_to_say_about_a_live_scrape(demo_scrape: str) -> None:
    result = _tool("promtool", "check", "metrics", stdin=demo_scrape)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""
