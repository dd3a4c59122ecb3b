"""Broker outages, on a broker of this module's own that the tests stop and start again.

The session's broker is shared by every other test, so it is never stopped; this one is
(SIGKILL, then a restart on the same ports and data folder, as after a crash).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import kafka_local  # scripts/, put on the path by tests/conftest.py
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.conftest import free_port
from tests.events import stream
from tests.integration.conftest import Topics, WorkerProcess, consume_all, produce, worker_config

Workers = Callable[[dict[str, Any]], WorkerProcess]
PRED = "streamwatch_events_total"
OUTAGE_SECONDS = 50  # longer than the 45 s after which a synchronous commit used to raise


@pytest.fixture(scope="module")
def broker() -> Iterator[kafka_local.LocalKafka]:
    with kafka_local.LocalKafka() as b:
        yield b


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def _outage(broker: kafka_local.LocalKafka, worker: WorkerProcess, seconds: float) -> None:
    """Kill the broker for ``seconds``; meanwhile the worker must stay up, keep serving
    /metrics, and say it is not ready once it has not committed for a while."""
    broker.halt(kill=True)
    deadline = time.monotonic() + seconds
    not_ready = []
    while time.monotonic() < deadline:
        assert worker.process is not None
        assert worker.process.poll() is None, worker.output()
        status, body = worker.get("/readyz")
        if status == 503:
            not_ready.append(body)
        assert worker.get("/metrics")[0] == 200
        time.sleep(1.0)
    assert any("not committed" in body for body in not_ready), (not_ready, worker.output())
    broker.start()


def test_a_long_outage_is_survived_and_counts_stay_exact(
    broker: kafka_local.LocalKafka, tmp_path: Any, workers: Workers
) -> None:
    topics = Topics(broker.bootstrap_servers).create(partitions=2)
    config = worker_config(topics, free_port())
    group = config["kafka"]["group_id"]
    produce(topics.bootstrap, topics.predictions, stream(0, 500, seed=1))
    produce(topics.bootstrap, topics.predictions, [(b"bad", b"not json")])
    worker = workers(config).start()
    worker.wait_for(lambda: worker.sample(PRED, topic=topics.predictions, model="fraud") == 500)
    worker.wait_for(lambda: _committed(topics.bootstrap, group, topics.predictions, 2) == 501)

    _outage(broker, worker, OUTAGE_SECONDS)

    # The broker is back with its data (the same topics); the worker resumes by itself.
    worker.wait_for(lambda: worker.get("/readyz")[0] == 200, timeout=120)
    produce(topics.bootstrap, topics.predictions, stream(500, 500, seed=2))
    worker.wait_for(
        lambda: worker.sample(PRED, topic=topics.predictions, model="fraud") == 1000, timeout=120
    )
    worker.wait_for(lambda: _committed(topics.bootstrap, group, topics.predictions, 2) == 1001)
    # exactly once each: nothing was processed twice, nothing lost
    time.sleep(2)
    assert worker.sample(PRED, topic=topics.predictions, model="fraud") == 1000
    assert len(consume_all(topics.bootstrap, topics.dead_letters, expected=1)) == 1
    assert worker.stop() == 0


def test_sigterm_during_an_outage_exits_0_within_the_grace_period(
    broker: kafka_local.LocalKafka, workers: Workers
) -> None:
    topics = Topics(broker.bootstrap_servers).create(partitions=1)
    config = worker_config(topics, free_port(), worker={"shutdown_grace_seconds": 4})
    produce(topics.bootstrap, topics.predictions, stream(0, 100, seed=3))
    worker = workers(config).start()
    worker.wait_for(lambda: worker.sample(PRED, topic=topics.predictions, model="fraud") == 100)
    broker.halt(kill=True)
    try:
        time.sleep(3)
        started = time.monotonic()
        # a liveness bound: the grace period plus the time to finish a poll and close
        assert worker.stop(timeout=30) == 0, worker.output()
        assert time.monotonic() - started < 30
        assert "stopped after 100 messages" in worker.output()
    finally:
        broker.start()


def test_a_dead_letter_topic_that_cannot_take_letters_pauses_consumption(
    broker: kafka_local.LocalKafka, workers: Workers
) -> None:
    """The dead-letter topic is deleted under a running worker: its letters cannot be
    delivered, so the worker stops consuming and committing (not ready), and catches up
    by itself once the topic exists again, with every letter delivered."""
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topics = Topics(broker.bootstrap_servers).create(partitions=1)
    config = worker_config(
        topics,
        free_port(),
        kafka={"properties": {"message.timeout.ms": 3000}},
    )
    group = config["kafka"]["group_id"]
    worker = workers(config).start()
    worker.wait_for(lambda: worker.get("/readyz")[0] == 200)
    admin = AdminClient({"bootstrap.servers": topics.bootstrap})
    admin.delete_topics([topics.dead_letters])[topics.dead_letters].result(timeout=30)
    time.sleep(2)

    produce(topics.bootstrap, topics.predictions, [(b"bad", f"bad {i}".encode()) for i in range(5)])
    produce(topics.bootstrap, topics.predictions, stream(0, 100, seed=4))
    worker.wait_for(lambda: "dead-letter topic unavailable" in worker.get("/readyz")[1])
    assert worker.sample("streamwatch_dead_letters_pending") >= 1
    assert _committed(topics.bootstrap, group, topics.predictions, 1) == 0
    assert worker.sample("streamwatch_checkpoint_failures_total", step="dead_letters") >= 1

    new = NewTopic(topics.dead_letters, num_partitions=1, replication_factor=1)
    admin.create_topics([new])[topics.dead_letters].result(timeout=30)
    worker.wait_for(
        lambda: _committed(topics.bootstrap, group, topics.predictions, 1) == 105, timeout=120
    )
    assert worker.get("/readyz")[0] == 200
    assert worker.sample(PRED, topic=topics.predictions, model="fraud") == 100
    letters = consume_all(topics.bootstrap, topics.dead_letters, expected=5)
    assert sorted(m.value() or b"" for m in letters) == [f"bad {i}".encode() for i in range(5)]
    assert worker.stop() == 0


def test_the_local_broker_keeps_its_topics_across_a_restart(
    broker: kafka_local.LocalKafka,
) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    name = f"keep-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    produce(broker.bootstrap_servers, name, [(b"k", b"kept")])
    broker.halt()
    broker.start()
    assert [m.value() for m in consume_all(broker.bootstrap_servers, name, expected=1)] == [b"kept"]
