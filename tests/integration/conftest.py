"""Helpers for tests on the real broker: topics, producing, and a worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


class Topics:
    """Unique topic names per test, created on the session's broker."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.predictions = f"{self.prefix}-predictions"
        self.labels = f"{self.prefix}-labels"
        self.dead_letters = f"{self.prefix}-dead-letters"

    def create(
        self,
        partitions: int = 2,
        labels_partitions: int | None = None,
        config: dict[str, str] | None = None,
        dead_letter_config: dict[str, str] | None = None,
    ) -> Topics:
        """Create the three topics; ``config`` applies to the two input topics."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        specs = [
            NewTopic(
                self.predictions,
                num_partitions=partitions,
                replication_factor=1,
                config=config or {},
            ),
            NewTopic(
                self.labels,
                num_partitions=labels_partitions or partitions,
                replication_factor=1,
                config=config or {},
            ),
            NewTopic(
                self.dead_letters,
                num_partitions=1,
                replication_factor=1,
                config=dead_letter_config or {},
            ),
        ]
        for future in admin.create_topics(specs).values():
            future.result(timeout=30)
        return self


@pytest.fixture
def topics(kafka_bootstrap: str) -> Topics:
    return Topics(kafka_bootstrap)


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None]],
    headers: list[tuple[str, str | bytes | None]] | None = None,
    **properties: Any,
) -> int:
    """Produce (key, value) pairs with the Java client's partitioner; returns the count.
    ``properties`` are librdkafka's, with ``_`` for ``.`` (``message_max_bytes=...``)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "enable.idempotence": True,
            **{k.replace("_", "."): v for k, v in properties.items()},
        }
    )
    n = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
    assert producer.flush(60) == 0
    return n


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for m in consumer.consume(500, timeout=0.5):
                assert m.error() is None, m.error()
                out.append(m)
        # and nothing more than expected
        extra_deadline = time.monotonic() + 1.0
        while time.monotonic() < extra_deadline:
            out.extend(m for m in consumer.consume(500, timeout=0.2) if m.error() is None)
    finally:
        consumer.close()
    return out


def worker_config(topics: Topics, port: int, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "kafka": {"bootstrap_servers": topics.bootstrap, "group_id": f"{topics.prefix}-group"},
        "topics": {
            "predictions": topics.predictions,
            "labels": topics.labels,
            "dead_letters": topics.dead_letters,
        },
        "models": [
            {
                "name": "fraud",
                "task": "binary",
                "features": [
                    {"name": "amount", "type": "numeric"},
                    {"name": "age", "type": "numeric"},
                    {"name": "country", "type": "categorical"},
                ],
                "reference": {"warmup_events": 500},
            }
        ],
        "drift": {"windows": [{"events": 500}, {"seconds": 3600}], "min_window_events": 100},
        "worker": {"commit_interval_seconds": 0.5, "poll_timeout_seconds": 0.2},
        "exporter": {"address": "127.0.0.1", "port": port},
    }
    for section, values in overrides.items():
        config[section] = (
            {**config.get(section, {}), **values} if isinstance(values, dict) else values
        )
    return config


class WorkerProcess:
    """``streamwatch run`` as a separate process, scraped over HTTP."""

    def __init__(self, config: dict[str, Any], directory: Path) -> None:
        self.port = int(config["exporter"]["port"])
        self.path = directory / f"worker-{uuid.uuid4().hex[:6]}.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.log = directory / f"{self.path.stem}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamwatch",
                    "--log-level",
                    os.environ.get("SW_LOG", "INFO"),
                    "run",
                    "--config",
                    str(self.path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
            )
        return self

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics keyed by (name, sorted labels)."""
        _, text = self.get("/metrics")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.output()}")
            try:
                if condition():
                    return
            except OSError:
                pass  # not listening yet (URLError, refused, timed out)
            time.sleep(0.1)
        raise AssertionError(f"condition not met within {timeout}s; worker log:\n{self.output()}")

    def stop(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def make(config: dict[str, Any]) -> WorkerProcess:
        w = WorkerProcess(config, tmp_path)
        started.append(w)
        return w

    yield make
    for w in started:
        w.kill()


__all__ = ["Topics", "WorkerProcess", "consume_all", "free_port", "produce", "worker_config"]
