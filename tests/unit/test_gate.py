"""The gate's rule without Prometheus: verdicts, scores, and the shipped AnalysisTemplate."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from streamwatch.config import load_settings, parse_settings
from streamwatch.errors import ConfigError
from streamwatch.gate import (
    NEVER,
    Condition,
    GateError,
    Queries,
    analysis_template,
    score_of,
)
from tests.conftest import ROOT, run_cli

EXAMPLE = ROOT / "examples/streamwatch.yaml"


def test_a_value_meeting_neither_condition_waits() -> None:
    settings = load_settings(EXAMPLE)
    checks = {c.name: c for c in Queries(settings, settings.models[0], "8", "7", "30m").checks()}
    assert checks["traffic"].verdict(1000) == "pass"
    assert checks["traffic"].verdict(999) == "wait"  # too little traffic never fails
    assert checks["drift_alarms"].verdict(0) == "pass"
    assert checks["drift_alarms"].verdict(0.9) == "fail"  # increase() extrapolates
    assert checks["quality"].verdict(-0.02) == "pass"
    assert checks["quality"].verdict(-0.021) == "fail"
    for check in checks.values():
        assert check.verdict(math.nan) == "wait"  # no data yet: Argo's inconclusive
    assert not NEVER.holds(0.0)


def test_lower_is_better_scores_flip_the_rule(tmp_path: Path) -> None:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["gate"] = {"score": "log_loss", "max_score_drop": 0.05}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(body))
    settings = load_settings(path)
    quality = Queries(settings, settings.models[0], "8", "", "1h").checks()[-1]
    assert (quality.success, quality.failure) == (Condition("<=", 0.05), Condition(">", 0.05))
    assert quality.verdict(0.04) == "pass"
    assert quality.verdict(0.06) == "fail"
    assert 'loss="log_loss"' in quality.query


def test_a_score_the_task_has_not_is_refused() -> None:
    settings = load_settings(EXAMPLE)
    settings = settings.model_copy(
        update={"gate": settings.gate.model_copy(update={"score": "mae"})}
    )
    with pytest.raises(GateError, match=r"gate\.score 'mae' does not apply to binary"):
        score_of(settings, settings.models[0])


def test_label_values_are_escaped_in_promql() -> None:
    settings = load_settings(EXAMPLE)
    traffic = Queries(settings, settings.models[0], 'v"8\\', "", "30m").checks()[0]
    assert 'model_version="v\\"8\\\\"' in traffic.query


def test_the_shipped_analysis_template_is_the_gate_of_the_deploy_config() -> None:
    config = ROOT / "deploy/streamwatch/streamwatch.yaml"
    result = run_cli(
        "analysis-template",
        "--config",
        str(config),
        "--prometheus",
        "http://prometheus.monitoring.svc:9090",
    )
    assert result.returncode == 0
    shipped = (ROOT / "deploy/argo/analysis-template.yaml").read_text()
    assert result.stdout == shipped, "stale: make generate"
    assert result.stdout == analysis_template(
        load_settings(config), "http://prometheus.monitoring.svc:9090"
    )


def test_bad_gate_config_names_the_field() -> None:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["gate"] = {"window": "half an hour"}
    with pytest.raises(ConfigError, match=r"gate\.window"):
        parse_settings(body, "c.yaml")
