"""One engine: a recorded stream with a drift and a concept change in one slice, replayed
from files, and consumed by `streamwatch run` from 1-partition and from 4-partition topics,
raises the same drift and concept alarms (same segment, signal, detector, count and last
event time) and rejects the same messages."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streamwatch.simulation import DEMO_CONFIG, Scenario, record
from tests.conftest import free_port, run_cli
from tests.integration.conftest import Topics, WorkerProcess, produce, worker_config

EVENTS = 20_000
SCENARIO = Scenario(events=EVENTS, drift_at=10_000, concept_at=12_000, seed=11)
DRIFT_KEY = ("model_version", "slice", "signal", "feature", "detector")
CONCEPT_KEY = ("model_version", "slice", "detector")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The scenario recorded to files and replayed."""
    folder = tmp_path_factory.mktemp("recorded")
    record(SCENARIO, folder, training_rows=100)
    config = folder / "config.yaml"
    config.write_text(
        yaml.safe_dump({k: DEMO_CONFIG[k] for k in ("models", "drift", "event_time", "quality")})
    )
    out = folder / "out"
    replay = run_cli(
        "replay",
        "--config", str(config),
        "--predictions", str(folder / "predictions.jsonl"),
        "--labels", str(folder / "labels.jsonl"),
        "--out", str(out),
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    alarms = orjson.loads((out / "alarms.json").read_bytes())
    rejected = int(replay.stdout.split("(")[1].split(" rejected")[0].replace(",", ""))
    return {"folder": folder, "alarms": alarms, "rejected": rejected}


def _key(message: bytes) -> bytes | None:
    """The prediction id, as producers key both topics (co-partitioned by id)."""
    try:
        return str(orjson.loads(message)["prediction_id"]).encode()
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None  # a malformed message: any partition


@pytest.mark.parametrize("partitions", [1, 4])
def test_replay_and_any_partition_count_raise_the_same_alarms(
    kafka_bootstrap: str, tmp_path: Path, replayed: dict[str, Any], partitions: int
) -> None:
    folder: Path = replayed["folder"]
    alarms = replayed["alarms"]
    drift = [a for a in alarms if a["signal"] != "quality"]
    concept = [a for a in alarms if a["signal"] == "quality"]
    assert drift, "the stream drifts: replay must see it"
    assert {a["slice"] for a in concept} >= {"country=US"}, "the US labels flip"

    topics = Topics(kafka_bootstrap).create(partitions=partitions)
    config = worker_config(topics, free_port(), event_time={"idle_seconds": 1})
    for section in ("models", "drift", "quality"):
        config[section] = DEMO_CONFIG[section]
    config["event_time"] |= DEMO_CONFIG["event_time"]
    for name, topic in (("predictions", topics.predictions), ("labels", topics.labels)):
        lines = (folder / f"{name}.jsonl").read_bytes().splitlines()
        produce(topics.bootstrap, topic, [(_key(line), line) for line in lines])
    worker = WorkerProcess(config, tmp_path).start()
    model = "fraud-detector"
    try:
        worker.wait_for(
            lambda: (
                worker.sample("streamwatch_events_total", topic=topics.predictions, model=model)
                == EVENTS
                and worker.sample("streamwatch_events_total", topic=topics.labels, model="")
                == EVENTS
                and worker.sample("streamwatch_events_waiting", topic=topics.labels) == 0
            ),
            timeout=180,
        )
        metrics = worker.metrics()
    finally:
        worker.stop()

    def live(name: str, keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        return {
            tuple(dict(labels)[k] for k in keys): value
            for (metric, labels), value in metrics.items()
            if metric == name and value > 0
        }

    def newest(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = {}
        for a in rows:
            key = tuple(a[k] for k in keys)
            out[key] = max(out.get(key, 0.0), datetime.fromisoformat(a["event_time"]).timestamp())
        return out

    for rows, keys, counter, last in (
        (
            drift,
            DRIFT_KEY,
            "streamwatch_drift_alarms_total",
            "streamwatch_drift_last_alarm_timestamp_seconds",
        ),
        (
            concept,
            CONCEPT_KEY,
            "streamwatch_concept_drift_alarms_total",
            "streamwatch_concept_drift_last_alarm_timestamp_seconds",
        ),
    ):
        counted = Counter(tuple(a[k] for k in keys) for a in rows)
        assert live(counter, keys) == {key: float(n) for key, n in counted.items()}
        times = live(last, keys)
        for key, t in newest(rows, keys).items():
            assert times[key] == pytest.approx(t, abs=1e-3)
    assert live("streamwatch_events_out_of_order_total", ("topic",)) == {}
    assert live("streamwatch_events_forced_total", ("topic",)) == {}
    # the same rejections (the demo mixes in one malformed message per 1,000)
    rejected = sum(
        value
        for (metric, _labels), value in metrics.items()
        if metric == "streamwatch_events_invalid_total"
    )
    assert rejected == replayed["rejected"] == EVENTS // 1000
