"""One engine: a recorded stream with a drift and a concept change in one slice, replayed
from files, and consumed by `streamwatch run` from 1-partition and from 4-partition topics,
and by two workers with ``engine.mode: repartition``, raises the same drift and concept
alarms (same segment, signal, detector, count and last event time) and rejects the same
messages."""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka import Producer

from streamwatch.simulation import DEMO_CONFIG, Scenario, record
from tests.conftest import free_port, run_cli
from tests.integration.conftest import Topics, WorkerProcess, worker_config

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


@pytest.mark.parametrize(
    ("partitions", "workers", "mode"),
    [
        (1, 1, "local"),
        (4, 1, "local"),
        pytest.param(
            4,
            2,
            "repartition",
            marks=pytest.mark.skipif(
                not os.environ.get("STREAMWATCH_TEST_REPARTITION"),
                reason="engine.mode repartition is experimental: this case failed 2 of about "
                "15 runs (labels out of order under load; once a hang), cause not found. "
                "Run it with STREAMWATCH_TEST_REPARTITION=1",
            ),
        ),
    ],
    ids=["1-partition", "4-partitions", "4-partitions-2-workers-repartition"],
)
def test_replay_and_any_partition_count_raise_the_same_alarms(
    kafka_bootstrap: str,
    tmp_path: Path,
    replayed: dict[str, Any],
    partitions: int,
    workers: int,
    mode: str,
) -> None:
    alarms = replayed["alarms"]
    drift = [a for a in alarms if a["signal"] != "quality"]
    concept = [a for a in alarms if a["signal"] == "quality"]
    assert drift, "the stream drifts: replay must see it"
    assert {a["slice"] for a in concept} >= {"country=US"}, "the US labels flip"

    topics = Topics(kafka_bootstrap).create(partitions=partitions)
    processes = []
    for _ in range(workers):
        config = worker_config(
            topics, free_port(), event_time={"idle_seconds": 1}, engine={"mode": mode}
        )
        for section in ("models", "drift", "quality"):
            config[section] = DEMO_CONFIG[section]
        config["event_time"] |= DEMO_CONFIG["event_time"]
        processes.append(WorkerProcess(config, tmp_path).start())
    try:
        # every worker in the group and assigned before the data comes: the routes of
        # stage 1 are not handed over on a rebalance (durable state is the next step)
        for w in processes:

            def ready(w: WorkerProcess = w) -> bool:
                return w.get("/readyz")[0] == 200

            w.wait_for(ready, timeout=60)
        # the recorded stream in its arrival order, predictions and labels interleaved as
        # they were produced (a topic that goes silent stops holding the other back)
        producer = Producer({"bootstrap.servers": topics.bootstrap, "linger.ms": 20})
        names = {
            SCENARIO.predictions_topic: topics.predictions,
            SCENARIO.labels_topic: topics.labels,
        }
        for r in SCENARIO.records():
            body = r.value() or b""
            producer.produce(names[r.topic()], value=body, key=_key(body))
            producer.poll(0)
        assert producer.flush(60) == 0
        model = "fraud-detector"

        def total(name: str, **labels: str) -> float:
            return sum(w.sample(name, **labels) for w in processes)

        version = {"model": model, "model_version": "2026.11.1"}

        def done() -> bool:  # every prediction and label applied by the engine
            return (
                total("streamwatch_predictions_total", **version) == EVENTS
                and total("streamwatch_labelled_events_total", **version, slice="__all__") == EVENTS
                and total("streamwatch_events_waiting", topic=topics.labels) == 0
            )

        try:
            processes[0].wait_for(done, timeout=240)
        except AssertionError:
            for w in processes:  # what each worker applied, and what waits
                print({k: v for k, v in w.metrics().items() if "events" in k[0]})
                print(w.output())
            raise
        scraped = [w.metrics() for w in processes]
    finally:
        for w in processes:
            w.stop()
    metrics: dict[Any, float] = {}
    for one in scraped:
        for series, value in one.items():
            if series[0].startswith(("streamwatch_drift_", "streamwatch_concept_")) and value:
                # a version's state lives in one worker: its series come from one only
                assert series not in metrics, series
            metrics[series] = metrics.get(series, 0.0) + value

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

    # every record in the one order: none out of it, none forced
    assert live("streamwatch_events_out_of_order_total", ("topic",)) == {}
    assert live("streamwatch_events_forced_total", ("topic",)) == {}
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
    # the same rejections (the demo mixes in one malformed message per 1,000)
    rejected = sum(
        value
        for (metric, _labels), value in metrics.items()
        if metric == "streamwatch_events_invalid_total"
    )
    assert rejected == replayed["rejected"] == EVENTS // 1000
