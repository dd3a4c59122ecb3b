"""A run that fails commits nothing, and its own error is what the caller sees.

The worker runs in this process on the real broker, with a pipeline that breaks on its
first batch (a tiny failing subclass). Leaving the group revokes the partitions; the revoke
checkpoint must not commit offsets of a run that failed, and no error from closing may hide
the original one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from streamwatch.app import build
from streamwatch.config import parse_settings
from streamwatch.deadletter import DeadLetters
from streamwatch.pipeline import Outcome, Pipeline
from streamwatch.records import RawMessage
from streamwatch.worker import Worker
from tests.conftest import free_port
from tests.events import stream
from tests.integration.conftest import Topics, produce, worker_config


class Broken(Pipeline):
    """Applies its first batch (whose offsets are then stored), breaks on the second."""

    def process(
        self, messages: Sequence[RawMessage], dead_letters: DeadLetters | None, *args: Any
    ) -> Outcome:
        if self.processed and messages:
            raise RuntimeError("the engine broke")
        return super().process(messages, dead_letters, *args)


def test_a_failed_run_commits_nothing_and_raises_its_own_error(topics: Topics) -> None:
    topics.create(partitions=2)
    produce(topics.bootstrap, topics.predictions, stream(0, 100, seed=1))
    # batches of 10, no periodic commit: the first batch's offsets are stored, not committed
    worker_settings = {"commit_interval_seconds": 3600, "batch_size": 10}
    config = worker_config(topics, free_port(), worker=worker_settings)
    settings = parse_settings(yaml.safe_load(yaml.safe_dump(config)))
    app = build(settings)
    p = app.pipeline
    broken = Broken(settings, p.monitor, p.quality, p.telemetry)
    worker = Worker(settings, broken, app.health)
    with pytest.raises(RuntimeError, match="the engine broke"):
        worker.run(threading.Event())
    consumer = Consumer(
        {"bootstrap.servers": topics.bootstrap, "group.id": settings.kafka.group_id}
    )
    try:
        committed = consumer.committed(
            [TopicPartition(topics.predictions, p) for p in (0, 1)], timeout=10
        )
    finally:
        consumer.close()
    assert broken.processed == 10  # one batch applied and stored...
    assert [tp.offset for tp in committed] == [-1001, -1001]  # ...and still not committed
