from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamwatch import ConfigError, load_settings
from streamwatch.config import parse_settings
from tests.conftest import ROOT, run_cli

MINIMAL = {
    "models": [{"name": "m", "task": "binary", "features": [{"name": "x", "type": "numeric"}]}]
}

BROKEN = {
    "kafka": {"bootstrap_servers": 42, "properties": {"sasl.password": "hunter2"}},
    "topics": {"labels": "no spaces allowed"},
    "contract": {"predictions": {"model": "meta..model"}},
    "models": [
        {"name": "m", "task": "ranking", "features": []},
        {
            "name": "n",
            "task": "binary",
            "features": [{"name": "x", "type": "numeric"}, {"name": "x", "type": "numeric"}],
        },
    ],
    "worker": {"batch_size": 0, "batch_sise": 10},
    "exporter": {"port": 70000},
    "quality": {"windows": [{"seconds": 3600}, {"seconds": 3600}]},
}
BROKEN_PATHS = [
    "kafka.bootstrap_servers",
    "topics.labels",
    "contract.predictions.model",
    "models.0.task",
    "models.0.features",
    "models.1.features",
    "worker.batch_size",
    "worker.batch_sise",
    "exporter.port",
    "quality.windows",
]


def test_defaults_fill_an_almost_empty_config() -> None:
    settings = parse_settings(MINIMAL)
    assert settings.topics.predictions == "predictions"
    assert settings.kafka.librdkafka() == {"bootstrap.servers": "localhost:9092"}
    assert settings.model("m") is not None
    assert settings.model("nope") is None


def test_every_problem_is_reported_with_its_path_and_a_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(BROKEN)
    paths = [p.path for p in caught.value.problems]
    assert sorted(paths) == sorted(BROKEN_PATHS)
    assert all(p.hint for p in caught.value.problems)
    assert "hunter2" not in str(caught.value)


def test_secrets_never_print(tmp_path: Path) -> None:
    settings = parse_settings(
        {
            **MINIMAL,
            "kafka": {"properties": {"sasl.password": "hunter2", "security.protocol": "SASL_SSL"}},
        }
    )
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    assert settings.kafka.librdkafka()["sasl.password"] == "hunter2"
    assert settings.kafka.librdkafka()["security.protocol"] == "SASL_SSL"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "kafka": {"bootstrap_servers": "file:9092"}}))
    monkeypatch.setenv("STREAMWATCH_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("STREAMWATCH_EXPORTER__PORT", "9999")
    settings = load_settings(path)
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.exporter.port == 9999


def test_bad_environment_value_names_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    monkeypatch.setenv("STREAMWATCH_EXPORTER__PORT", "lots")
    with pytest.raises(ConfigError, match=r"exporter\.port"):
        load_settings(path)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass the path of a readable YAML file"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamwatch", "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_check_config_cli_lists_every_path_and_exits_non_zero(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(BROKEN))
    result = _check_config(path)
    assert result.returncode == 2
    for field in BROKEN_PATHS:
        assert f"  {field}: " in result.stderr
    assert "fix: " in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_check_config_cli_accepts_the_shipped_example() -> None:
    result = _check_config(ROOT / "examples" / "streamwatch.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (
            {"drift": {"windows": [{"events": 500}, {"seconds": 60, "tumbling": True}]}},
            "drift.windows",
            "tumbling",
        ),
        (
            {"quality": {"windows": [{"events": 500, "tumbling": True}]}},
            "quality.windows.0",
            "seconds",
        ),
        ({"models": [{**MINIMAL["models"][0], "classes": ["a", "b"]}]}, "models.0", "multiclass"),
        (
            {"models": [{**MINIMAL["models"][0], "task": "multiclass", "classes": ["a", "a"]}]},
            "models.0",
            "distinct",
        ),
        (
            {
                "models": [
                    {
                        **MINIMAL["models"][0],
                        "slices": [{"name": "c", "keys": ["c"], "max_values": 500, "drift": True}],
                    }
                ]
            },
            "models.0.slices.0",
            "max_values",
        ),
        (
            {"quality": {"reference_labels": 5000, "reference_labels_max": 3000}},
            "quality",
            "reference_labels_max to 5000 or more",
        ),
    ],
)
def test_new_window_class_and_slice_settings_name_the_field_and_the_fix(
    change: dict[str, object], path: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({**MINIMAL, **change})
    [problem] = caught.value.problems
    assert problem.path == path
    assert words in problem.message + problem.hint
    assert problem.hint


def test_tumbling_windows_are_named_apart_from_sliding_ones() -> None:
    settings = parse_settings(
        {
            **MINIMAL,
            "quality": {"windows": [{"seconds": 3600}, {"seconds": 3600, "tumbling": True}]},
        }
    )
    assert [w.name for w in settings.quality.windows] == ["1h", "tumbling_1h"]
    assert [w.name for w in parse_settings(MINIMAL).quality.windows] == [
        "events_1000",
        "tumbling_1h",
        "tumbling_1d",
    ]


SECRET = "s3cr3t-Value"


@pytest.mark.parametrize(
    "line",
    [
        f"    sasl.password: @{SECRET}",  # a YAML reserved indicator
        f"    sasl.password: {SECRET}: more",  # a second mapping on one line
        f'    sasl.password: "{SECRET}',  # an unclosed quote
    ],
)
def test_yaml_errors_never_echo_a_secret(tmp_path: Path, line: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "kafka:\n  properties:\n    sasl.username: me\n"
        + line
        + "\nmodels:\n  - {name: m, task: binary, features: [{name: x, type: numeric}]}\n"
    )
    for args in (["check-config", str(config)], ["run", "--config", str(config)]):
        result = run_cli(*args)
        assert result.returncode == 2
        assert "not valid YAML" in result.stderr
        assert SECRET not in result.stderr + result.stdout
        assert "line " in result.stderr


def test_yaml_errors_quote_a_line_without_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("models: [\n  {name: m\n")
    result = run_cli("check-config", str(config))
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr


def test_a_malformed_environment_override_names_the_variable(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(MINIMAL))
    env = {**os.environ, "STREAMWATCH_KAFKA": '{"properties": {"sasl.password": "' + SECRET}
    result = subprocess.run(
        [sys.executable, "-m", "streamwatch", "check-config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert "STREAMWATCH_KAFKA" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr


def test_check_config_refuses_a_property_librdkafka_refuses(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**MINIMAL, "kafka": {"properties": {"sasl.passwrd": "x"}}}))
    result = run_cli("check-config", str(config))
    assert result.returncode == 2
    assert "kafka.properties" in result.stderr
    assert "sasl.passwrd" in result.stderr


def test_web_config_is_checked(tmp_path: Path) -> None:
    web = tmp_path / "web.yaml"
    web.write_text("basic_auth_users: {prometheus: not-a-hash}\n")
    with pytest.raises(ConfigError) as caught:
        parse_settings({**MINIMAL, "exporter": {"web_config_file": str(web)}})
    assert "bcrypt" in str(caught.value)
    web.write_text("tls_server_config: {cert_file: missing.pem, key_file: missing.key}\n")
    with pytest.raises(ConfigError) as caught:
        parse_settings({**MINIMAL, "exporter": {"web_config_file": str(web)}})
    assert "tls_server_config.cert_file" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("partition.assignment.strategy", "cooperative-sticky", "range assignor"),
        ("enable.auto.commit", True, "dead letters are flushed"),
        ("group.id", "other", "kafka.group_id"),
    ],
)
def test_properties_the_guarantees_rest_on_are_refused(key: str, value: object, says: str) -> None:
    from streamwatch.config import parse_settings
    from streamwatch.errors import ConfigError

    body: dict[str, object] = {"models": [{"name": "m", "features": [{"name": "x"}]}]}
    body["kafka"] = {"properties": {key: value}}
    with pytest.raises(ConfigError, match=r"kafka\.properties") as caught:
        parse_settings(body, "c.yaml")
    assert says in str(caught.value)


def test_cusum_designs_take_one_number_or_several_and_name_a_bad_one() -> None:
    one = parse_settings(MINIMAL | {"drift": {"mean_shift_sigmas": 0.5, "scale_ratio": 1.5}})
    assert (one.drift.mean_shift_sigmas, one.drift.scale_ratio) == ([0.5], [1.5])
    many = parse_settings(MINIMAL | {"drift": {"mean_shift_sigmas": [1.0, 0.25, 1.0]}})
    assert many.drift.mean_shift_sigmas == [0.25, 1.0]  # sorted, once each
    with pytest.raises(ConfigError, match=r"drift\.scale_ratio"):
        parse_settings(MINIMAL | {"drift": {"scale_ratio": [0.5, 2.0]}})
