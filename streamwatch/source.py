"""Source: the Kafka consumer of the predictions and labels topics.

At-least-once by construction: offsets are *stored* only after a batch's effects are
applied (``enable.auto.offset.store=false``) and *committed* only by the worker's checkpoint
(``enable.auto.commit=false``), after the dead-letter producer is flushed.

Both topics are consumed by one group with the ``range`` assignor: with equal partition
counts it gives partition p of each topic to the same worker, which the label join relies on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamwatch.config import Settings
from streamwatch.errors import KafkaSetupError

log = logging.getLogger(__name__)

#: Properties the at-least-once guarantee depends on; user properties cannot change them.
FORCED = {"enable.auto.commit": False, "enable.auto.offset.store": False}
DEFAULTS = {
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "range",
    "enable.partition.eof": False,
    "statistics.interval.ms": 0,
}

Rebalance = Callable[[list[TopicPartition]], None]


def consumer_config(settings: Settings) -> dict[str, Any]:
    return {
        **DEFAULTS,
        "group.id": settings.kafka.group_id,
        **settings.kafka.librdkafka(),
        **FORCED,
    }


class Source:
    """Consumes both topics in micro-batches and keeps track of offsets to store."""

    def __init__(
        self, settings: Settings, on_assign: Rebalance, on_revoke: Rebalance, on_lost: Rebalance
    ) -> None:
        self.topics = (settings.topics.predictions, settings.topics.labels)
        self._required = (*self.topics, settings.topics.dead_letters)
        self._servers = settings.kafka.bootstrap_servers
        self._consumer = Consumer(consumer_config(settings))
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self.assignment: list[TopicPartition] = []

    def check_topics(self, timeout: float = 10.0) -> dict[str, int]:
        """Partition counts of the topics; raises KafkaSetupError if one is missing."""
        metadata = self._consumer.list_topics(timeout=timeout)
        counts = {}
        for name in self._required:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None:
                raise KafkaSetupError(
                    f"topic {name!r} does not exist on {self._servers}: create it, or "
                    f"set topics.* in the config to the topics your producers write"
                )
            counts[name] = len(topic.partitions)
        return counts

    def subscribe(self) -> None:
        def assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.assignment = list(partitions)
            self._on_assign(partitions)

        def revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self._on_revoke(partitions)
            self.assignment = []

        def lost(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self._on_lost(partitions)
            self.assignment = []

        self._consumer.subscribe(
            list(self.topics), on_assign=assign, on_revoke=revoke, on_lost=lost
        )

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        """A batch of data messages. Error events are logged, or raised when fatal."""
        messages = self._consumer.consume(num_messages=max_messages, timeout=timeout)
        data = []
        for message in messages:
            error = message.error()
            if error is None:
                data.append(message)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
        return data

    def store(self, messages: list[Message]) -> None:
        """Mark a processed batch: next offset per partition, for the next commit."""
        last: dict[tuple[str, int], int] = {}
        for m in messages:
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            if topic is None or partition is None or offset is None:
                continue  # not a data message (consume() returns only data messages)
            key = (topic, partition)
            last[key] = max(last.get(key, -1), offset)
        if last:
            self._consumer.store_offsets(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
            )

    def commit(self) -> None:
        """Commit the stored offsets synchronously (nothing stored is not an error)."""
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as error:
            if error.args[0].code() != KafkaError._NO_OFFSET:
                raise

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the end of each assigned partition (from cached watermarks)."""
        if not self.assignment:
            return {}
        lags = {}
        for tp in self._consumer.position(self.assignment):
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                lags[(tp.topic, tp.partition)] = (
                    max(0, high - tp.offset) if tp.offset >= 0 else high
                )
        return lags

    def close(self) -> None:
        self._consumer.close()
