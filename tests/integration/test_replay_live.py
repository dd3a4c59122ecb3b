"""Replay equals live on one partition: the demo's recorded stream, replayed from files and
consumed by `streamwatch run` from a 1-partition topic, raises the same drift alarms (same
signal, slice, detector, count and last event time) and rejects the same messages."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import yaml

from streamwatch.simulation import DEMO_CONFIG, Scenario, record
from tests.conftest import free_port, run_cli
from tests.integration.conftest import Topics, WorkerProcess, produce, worker_config


def test_replay_raises_the_alarms_the_worker_raises(kafka_bootstrap: str, tmp_path: Path) -> None:
    data = tmp_path / "recorded"
    scenario = Scenario(events=20_000, drift_at=10_000, seed=11)
    record(scenario, data, training_rows=100)
    topics = Topics(kafka_bootstrap).create(partitions=1)
    config = worker_config(topics, free_port())
    for section in ("models", "drift", "event_time"):
        config[section] = DEMO_CONFIG[section]
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    replay = run_cli(
        "replay",
        "--config", str(config_path),
        "--predictions", str(data / "predictions.jsonl"),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    alarms = [
        a
        for a in orjson.loads((tmp_path / "out/alarms.json").read_bytes())
        if a["signal"] != "quality"
    ]
    assert alarms, "the stream drifts: replay must see it"

    lines = (data / "predictions.jsonl").read_bytes().splitlines()
    produce(topics.bootstrap, topics.predictions, [(None, line) for line in lines])
    worker = WorkerProcess(config, tmp_path).start()
    valid = 20_000
    worker.wait_for(
        lambda: (
            worker.sample(
                "streamwatch_events_total", topic=topics.predictions, model="fraud-detector"
            )
            == valid
        ),
        timeout=120,
    )
    metrics = worker.metrics()
    worker.stop()

    def live(name: str) -> dict[tuple[str, ...], float]:
        keys = ("model_version", "slice", "signal", "feature", "detector")
        return {
            tuple(dict(labels)[k] for k in keys): value
            for (metric, labels), value in metrics.items()
            if metric == name and value > 0
        }

    replayed = Counter(
        (a["model_version"], a["slice"], a["signal"], a["feature"], a["detector"]) for a in alarms
    )
    counts = live("streamwatch_drift_alarms_total")
    assert counts == {key: float(n) for key, n in replayed.items()}
    last = live("streamwatch_drift_last_alarm_timestamp_seconds")
    for key in replayed:
        newest = max(
            a["event_time"]
            for a in alarms
            if (a["model_version"], a["slice"], a["signal"], a["feature"], a["detector"]) == key
        )

        assert abs(datetime.fromisoformat(newest).timestamp() - last[key]) < 1e-3
    # the same rejections (the demo mixes in one malformed message per 1,000)
    rejected = {
        dict(labels)["reason"]: value
        for (metric, labels), value in metrics.items()
        if metric == "streamwatch_events_invalid_total" and value > 0
    }
    printed = replay.stdout.split("(")[1].split(" rejected")[0]
    assert sum(rejected.values()) == int(printed.replace(",", "")) == 20
