"""`streamwatch baseline` and `streamwatch replay` through the CLI, on files they write."""

from __future__ import annotations

import csv
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from streamwatch.app import build
from streamwatch.coding import signals_of
from streamwatch.config import load_settings
from streamwatch.errors import ConfigError
from streamwatch.reference import Profile
from tests.conftest import run_cli

MODEL: dict[str, Any] = {
    "name": "fraud",
    "task": "binary",
    "features": [
        {"name": "amount", "type": "numeric"},
        {"name": "age", "type": "numeric"},
        {"name": "country", "type": "categorical"},
    ],
    "reference": {"warmup_events": 3000},
}


def _config(tmp_path: Path, **reference: Any) -> Path:
    # a warm-up of 3,000 events: small references read their own sampling error as drift
    path = tmp_path / "c.yaml"
    model = {**MODEL, "reference": {**MODEL["reference"], **reference}}
    path.write_text(
        yaml.safe_dump(
            {
                "models": [model],
                "worker": {"batch_size": 500},
                "drift": {"windows": [{"events": 1000}, {"seconds": 3600}]},
            }
        )
    )
    return path


def _baseline(
    tmp_path: Path, data: Path, version: str, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`streamwatch baseline` of model fraud on ``data``, writing ``out``."""
    return run_cli(
        "baseline",
        "--config",
        str(_config(tmp_path)),
        "--data",
        str(data),
        "--model",
        "fraud",
        "--model-version",
        version,
        *extra,
        "--out",
        str(out),
    )


def _training_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "amount": float(a),
            "age": float(b),
            "country": c,
            "prediction": float(p),
            "label": int(u < p),
        }  # labelled validation data, calibrated scores
        for a, b, c, p, u in zip(
            rng.normal(100, 15, n),
            rng.normal(40, 10, n),
            rng.choice(["DE", "FR", "US"], n),
            rng.uniform(0, 1, n),
            rng.uniform(0, 1, n),
            strict=True,
        )
    ]


def _write(rows: list[dict[str, Any]], path: Path) -> Path:
    if path.suffix == ".jsonl":
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_baseline_writes_a_profile_with_lineage(tmp_path: Path, suffix: str) -> None:
    config = _config(tmp_path)
    data = _write(_training_rows(3000), tmp_path / f"train{suffix}")
    out = tmp_path / "fraud-v7.profile.json"
    result = run_cli(
        "baseline",
        "--config",
        str(config),
        "--data",
        str(data),
        "--model",
        "fraud",
        "--model-version",
        "v7",
        "--run-id",
        "run-42",
        "--code-revision",
        "abc123",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "3,000 rows" in result.stdout
    body = json.loads(out.read_text())
    assert body["format_version"] == 1
    lineage = body["lineage"]
    assert (lineage["model"], lineage["model_version"], lineage["run_id"]) == (
        "fraud",
        "v7",
        "run-42",
    )
    assert lineage["code_revision"] == "abc123"
    assert lineage["rows"] == 3000
    assert lineage["data_snapshot"].startswith("sha256:")
    assert lineage["created_at"]
    amount = body["signals"]["feature:amount"]
    assert abs(amount["mean"] - 100) < 1.5
    assert sum(amount["counts"]) == 3000
    assert set(body["signals"]["feature:country"]["categories"]) == {"DE", "FR", "US"}
    assert "prediction:prediction" in body["signals"]
    # labelled rows: a calibration map for the quality estimate, close to the identity here
    calibration = body["calibration"]
    assert len(calibration) == 20
    assert abs(calibration[2] - 0.125) < 0.06
    assert abs(calibration[17] - 0.875) < 0.06
    # ...and the reference error rate of the quality alarms, at the config's threshold
    rows = _training_rows(3000)
    wrong = sum((r["prediction"] >= 0.5) != bool(r["label"]) for r in rows)
    assert body["errors"] == [wrong, 3000]


def test_the_worker_judges_a_version_against_its_profile(tmp_path: Path) -> None:
    data = _write(_training_rows(3000), tmp_path / "train.jsonl")
    out = tmp_path / "p.json"
    lineage_args = ["--run-id", "run-42", "--code-revision", "9f1c2e7"]
    lineage_args += ["--image", "registry.example/train@sha256:ab12", "--metric", "accuracy=0.95"]
    assert _baseline(tmp_path, data, "v7", out, *lineage_args).returncode == 0
    # the five questions: code, data, features, environment, metrics
    lineage = json.loads(out.read_text())["lineage"]
    assert lineage["code_revision"] == "9f1c2e7"
    assert lineage["data_snapshot"].startswith("sha256:")
    assert lineage["features"] == ["amount", "age", "country"]
    assert lineage["environment"]["image"] == "registry.example/train@sha256:ab12"
    assert lineage["environment"]["python"] == platform.python_version()
    assert lineage["environment"]["numpy"] == np.__version__
    assert lineage["metrics"] == {"accuracy": 0.95}
    settings = load_settings(_config(tmp_path, profiles=[str(out)]))
    app = build(settings)
    snap = app.pipeline.monitor.snapshot()
    assert snap.model_info == []  # nothing seen yet
    from tests.events import prediction

    events = [prediction(i, 100.0, 40.0, "DE", version="v7") for i in range(10)]
    from streamwatch.records import Record

    app.pipeline.process(
        [Record("predictions", orjson.dumps(e), None, 0, i) for i, e in enumerate(events)], None
    )
    app.pipeline.drain()
    snap = app.pipeline.monitor.snapshot()
    assert snap.model_info == [
        (
            "fraud",
            "v7",
            "train.jsonl",
            "run-42",
            Profile.load(out, signals_of(settings.models[0])).lineage.data_snapshot,
            "9f1c2e7",
            "registry.example/train@sha256:ab12",
        )
    ]
    assert snap.reference_scores == [("fraud", "v7", "accuracy", 0.95)]
    assert snap.predictions == [("fraud", "v7", 10)]
    assert snap.warmup == [("fraud", "v7", "__all__", 1.0)]  # no warm-up with a profile


def test_a_metric_that_is_not_name_equals_number_is_refused(tmp_path: Path) -> None:
    data = _write(_training_rows(100), tmp_path / "train.csv")
    result = _baseline(tmp_path, data, "v1", tmp_path / "p.json", "--metric", "accuracy")
    assert result.returncode == 2
    assert "write NAME=NUMBER" in result.stderr


def test_a_profile_of_another_model_is_a_config_error(tmp_path: Path) -> None:
    data = _write(_training_rows(100), tmp_path / "train.csv")
    out = tmp_path / "p.json"
    assert _baseline(tmp_path, data, "v1", out).returncode == 0
    body = json.loads(out.read_text())
    body["lineage"]["model"] = "other"
    out.write_text(json.dumps(body))
    with pytest.raises(ConfigError, match=r"models\.0\.reference\.profiles\.0"):
        build(load_settings(_config(tmp_path, profiles=[str(out)])))
    result = run_cli("check-config", str(_config(tmp_path, profiles=[str(tmp_path / "nope.json")])))
    assert result.returncode == 2
    assert "models.0.reference.profiles" in result.stderr


def test_replay_backtests_a_recorded_day(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    lines, labels = [], []
    for i in range(6000):
        shift = 15.0 if i >= 4000 else 0.0  # a one-sigma shift of amount at event 4000
        score = float(rng.uniform())
        event = {
            "prediction_id": f"p{i}",
            "model": "fraud",
            "model_version": "v1",
            "timestamp": 1_790_000_000_000 + i * 1000,
            "features": {
                "amount": float(rng.normal(100 + shift, 15)),
                "age": float(rng.normal(40, 10)),
                "country": str(rng.choice(["DE", "FR"])),
            },
            "prediction": score,
        }
        lines.append(orjson.dumps(event))
        labels.append(
            orjson.dumps(
                {
                    "prediction_id": f"p{i}",
                    "label": bool(rng.random() < score),
                    "timestamp": 1_790_000_000_000 + i * 1000 + 300_000,
                }
            )
        )
    lines.append(b"not json")
    # recorded in arrival order, each pair of neighbours swapped at random: out of order by
    # one second, within event_time.reorder_seconds (1 s), so the event order sorts them
    for i in range(0, len(lines) - 1, 2):
        if rng.random() < 0.5:
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_bytes(b"\n".join(lines) + b"\n")
    labels_file = tmp_path / "labels.jsonl"
    labels_file.write_bytes(b"\n".join(labels) + b"\n")
    out = tmp_path / "backtest"
    result = run_cli(
        "replay",
        "--config",
        str(_config(tmp_path)),
        "--predictions",
        str(predictions),
        "--labels",
        str(labels_file),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "replayed 6,000 predictions (1 rejected, 6,000 labels)" in result.stdout
    every = json.loads((out / "alarms.json").read_text())
    alarms = [a for a in every if a["signal"] != "quality"]  # drift alarms
    assert alarms
    first = alarms[0]
    assert (first["feature"], first["detector"]) == ("amount", "cusum_mean")
    assert 4000 <= first["event_index"] < 4200
    assert first["statistic"] > first["threshold"]
    assert first["event_time"].startswith("2026-09")
    assert {a["feature"] for a in alarms} == {"amount"}
    with (out / "timeline.csv").open() as f:
        rows = list(csv.DictReader(f))
    psi = [
        float(r["value"])
        for r in rows
        if r["feature"] == "amount" and r["statistic"] == "psi" and r["window"] == "events_1000"
    ]
    assert psi[0] < 0.1 < psi[-1]
    accuracy = [
        float(r["value"])
        for r in rows
        if r["signal"] == "quality" and r["slice"] == "__all__" and r["statistic"] == "accuracy"
    ]
    estimated = [
        float(r["value"])
        for r in rows
        if r["signal"] == "quality"
        and r["slice"] == "__all__"
        and r["statistic"] == "estimated_accuracy"
    ]
    assert accuracy
    assert estimated
    assert abs(accuracy[-1] - estimated[-1]) < 0.05  # calibrated scores: the estimate holds


def test_replay_goes_through_the_workers_stages(tmp_path: Path) -> None:
    """The same admission as the worker (a record from the future is rejected), and every
    alarm in alarms.json: quality falls in a 5% slice, and its concept alarm names it."""
    rng = np.random.default_rng(3)
    start = 1_790_000_000_000
    predictions, labels = [], []
    for i in range(8000):
        country = "IS" if i % 20 == 0 else "DE"
        positive = bool(rng.random() < 0.3)
        wrong = rng.random() < (0.5 if country == "IS" and i >= 4000 else 0.03)
        score = 0.1 if positive == wrong else 0.9
        at = start + i * 1000
        predictions.append(
            orjson.dumps(
                {
                    "prediction_id": f"p{i}",
                    "model": "fraud",
                    "model_version": "v1",
                    "timestamp": at,
                    "features": {"amount": 100.0, "age": 40.0, "country": country},
                    "prediction": score,
                    "attributes": {"country": country},
                }
            )
        )
        labels.append(
            orjson.dumps({"prediction_id": f"p{i}", "label": positive, "timestamp": at + 60_000})
        )
    future: dict[str, Any] = {"prediction_id": "f", "model": "fraud", "model_version": "v1"}
    future |= {"timestamp": "2999-01-01T00:00:00Z", "features": {}, "prediction": 0.5}
    predictions.append(orjson.dumps(future))
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(predictions) + b"\n")
    (tmp_path / "l.jsonl").write_bytes(b"\n".join(labels) + b"\n")
    config = yaml.safe_load(_config(tmp_path).read_text())
    config["models"][0]["slices"] = [{"name": "country", "keys": ["country"]}]
    config["quality"] = {"reference_labels": 100}  # Iceland has 200 labels before the change
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = run_cli(
        "replay",
        "--config", str(tmp_path / "c.yaml"),
        "--predictions", str(tmp_path / "p.jsonl"),
        "--labels", str(tmp_path / "l.jsonl"),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "replayed 8,000 predictions (1 rejected, 8,000 labels)" in result.stdout
    alarms = json.loads((tmp_path / "out/alarms.json").read_text())
    concept = [a for a in alarms if a["signal"] == "quality"]
    assert {a["slice"] for a in concept} >= {"country=IS"}
    first = min(a["event_time"] for a in concept if a["slice"] == "country=IS")
    assert first > "2026-09-21T15:20"  # after the change (event 4,000 is at 15:20:00 UTC)
    for alarm in concept:  # the label that tipped the test: its line, and its prediction
        assert alarm["file"] == "labels"
        assert orjson.loads(labels[alarm["line"] - 1])["prediction_id"] == alarm["prediction_id"]
    iceland = min((a for a in concept if a["slice"] == "country=IS"), key=lambda a: a["line"])
    assert (
        f"first quality alarm fraud v1 in country=IS cusum at the label for "
        f"{iceland['prediction_id']} (line {iceland['line']:,} of the labels)"
    ) in result.stdout
    assert [a["event_time"] for a in alarms] == sorted(a["event_time"] for a in alarms)


def test_baseline_reads_events_through_the_contract_with_their_labels(tmp_path: Path) -> None:
    """Events shaped by the contract (renamed fields), labels included, and multiclass
    predictions as {"class", "scores"}: read as the worker reads them."""
    rng = np.random.default_rng(5)
    rows = []
    for _ in range(2000):
        p = float(rng.uniform())
        rows.append(
            orjson.dumps(
                {
                    "inputs": {"amount": float(rng.normal(100, 15)), "age": 40.0, "country": "DE"},
                    "output": {"score": p},
                    "outcome": bool(rng.random() < p),
                }
            )
        )
    (tmp_path / "binary.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    contract = {
        "predictions": {"features": "inputs", "prediction": "output.score"},
        "labels": {"label": "outcome"},
    }
    config = {"models": [MODEL], "contract": contract}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "binary.json"
    result = run_cli(
        "baseline", "--config", str(tmp_path / "c.yaml"), "--data", str(tmp_path / "binary.jsonl"),
        "--model", "fraud", "--model-version", "v1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(out.read_text())
    assert abs(body["signals"]["feature:amount"]["mean"] - 100) < 2
    assert body["signals"]["prediction:prediction"]["count"] == 2000
    assert body["calibration"] is not None  # the labels came through the mapping

    multiclass = {**MODEL, "name": "kind", "task": "multiclass", "classes": ["a", "b"]}
    classes = [
        orjson.dumps(
            {
                "features": {"amount": 1.0, "age": 2.0, "country": "DE"},
                "prediction": {"class": c, "scores": {"a": 0.7, "b": 0.3}},
            }
        )
        for c in ["a", "b", "a"] * 100
    ]
    (tmp_path / "multi.jsonl").write_bytes(b"\n".join(classes) + b"\n")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"models": [multiclass]}))
    out = tmp_path / "multi.json"
    result = run_cli(
        "baseline", "--config", str(tmp_path / "m.yaml"), "--data", str(tmp_path / "multi.jsonl"),
        "--model", "kind", "--model-version", "v1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    prediction = json.loads(out.read_text())["signals"]["prediction:prediction"]
    assert prediction["categories"] == ["a", "b"]


def test_replay_applies_a_file_out_of_order_as_a_live_worker_would_and_says_so(
    tmp_path: Path,
) -> None:
    """Replay reads a file in its order, as the worker reads a partition: records more out
    of order than event_time.reorder_seconds are applied late, counted and reported, never
    dropped."""
    rng = np.random.default_rng(5)
    lines = [
        orjson.dumps(
            {
                "prediction_id": f"p{i}",
                "model": "fraud",
                "model_version": "v1",
                "timestamp": 1_790_000_000_000 + i * 1000,
                "features": {"amount": float(rng.normal(100, 15)), "age": 40.0, "country": "DE"},
                "prediction": 0.5,
            }
        )
        for i in range(3000)
    ]
    rng.shuffle(lines)
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "backtest"
    args = ["--config", str(_config(tmp_path)), "--predictions", str(predictions)]
    result = run_cli("replay", *args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "replayed 3,000 predictions (0 rejected)" in result.stdout
    late = int(result.stdout.split(" records more out of order")[0].split()[-1].replace(",", ""))
    assert 1000 < late < 3000  # a shuffled day: most records come after later ones
