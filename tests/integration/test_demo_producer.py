"""The compose stack's demo producer on a real broker: `streamwatch demo --produce-only`
with the workers' config, beside a `streamwatch run` worker that reads what it produces."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from streamwatch.simulation import DEMO_CONFIG
from tests.conftest import ROOT, free_port
from tests.integration.conftest import Topics, WorkerProcess, worker_config


def test_the_demo_producer_feeds_workers_at_its_rate_with_event_times_of_now(
    topics: Topics, tmp_path: Path
) -> None:
    topics.create(partitions=2)
    config = worker_config(topics, free_port())
    config["models"] = DEMO_CONFIG["models"]  # the compose stack's model
    worker = WorkerProcess(config, tmp_path).start()
    worker.wait_for(lambda: worker.get("/readyz")[0] == 200)
    producer = subprocess.Popen(
        [
            sys.executable, "-m", "streamwatch", "demo", "--produce-only",
            "--config", str(worker.path), "--rate", "400", "--events", "1500",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        events = {"topic": topics.predictions, "model": "fraud-detector"}
        # past the first round of 1,500: the next round starts at once
        worker.wait_for(lambda: worker.sample("streamwatch_events_total", **events) > 2000, 60)
        newest = worker.sample("streamwatch_last_event_timestamp_seconds", **events)
        assert abs(newest - time.time()) < 60  # event times of now, not of a fixed past
    finally:
        producer.send_signal(signal.SIGTERM)
        out, err = producer.communicate(timeout=30)
    assert producer.returncode == 0, err
    produced = int(out.split()[1].replace(",", ""))  # "produced N predictions to ..."
    assert out.startswith("produced ")
    # everything it produced reached the worker: valid events counted, malformed ones
    # (one per 1,000, as in real traffic) dead-lettered
    total = {"topic": topics.predictions, "model": "fraud-detector"}
    worker.wait_for(
        lambda: (
            worker.sample("streamwatch_events_total", **total)
            + sum(
                worker.sample(
                    "streamwatch_events_invalid_total", topic=topics.predictions, reason=reason
                )
                for reason in ("not_json", "unknown_model", "bad_timestamp")
            )
            == produced
        ),
        60,
    )
    for reason in ("future_timestamp", "late_timestamp"):
        assert (
            worker.sample(
                "streamwatch_events_invalid_total", topic=topics.predictions, reason=reason
            )
            == 0
        )
    assert yaml.safe_load(worker.path.read_text())["topics"]["predictions"] == topics.predictions
    worker.stop()
