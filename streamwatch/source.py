"""Source: where messages come from. :class:`Source` is what the one loop
(:mod:`streamwatch.loop`) reads; :class:`KafkaSource` is the consumer of the predictions and
labels topics, and :class:`streamwatch.recorded.RecordedSource` the finite streams of the demo
and of replay.

At-least-once by construction: offsets are *stored* only after a batch's effects are
applied (``enable.auto.offset.store=false``) and *committed* only by the worker's checkpoint
(``enable.auto.commit=false``), after the dead-letter producer is flushed.

Commits are asynchronous: a synchronous commit blocks while the group coordinator is away
(45 s, then an exception, in a broker outage). Their results arrive through ``on_commit``;
:attr:`KafkaSource.commit_error` holds the last failure until a commit succeeds, which the
worker reports as not ready. Offsets that failed to commit stay stored and go out with the
next commit.

Both topics are consumed by one group with the ``range`` assignor: with equal partition
counts it gives partition p of each topic to the same worker, which the label join relies on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamwatch.config import Settings
from streamwatch.errors import KafkaSetupError
from streamwatch.records import RawMessage

log = logging.getLogger(__name__)

#: Properties the at-least-once guarantee depends on; user properties cannot change them.
FORCED = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "partition.assignment.strategy": "range",  # the join needs partition p of both topics
}
DEFAULTS = {
    "auto.offset.reset": "earliest",
    "enable.partition.eof": False,
    "statistics.interval.ms": 0,
    "fetch.queue.backoff.ms": 10,
}

Rebalance = Callable[[list[TopicPartition]], None]
Key = tuple[str, int]  # (topic, partition)


class Source(Protocol):
    """Partitions of the predictions and labels topics, read in micro-batches."""

    topics: tuple[str, str]  # (predictions, labels)

    @property
    def partitions(self) -> list[Key]:
        """The partitions read now (a consumer's assignment)."""
        ...

    def consume(self, max_messages: int, timeout: float) -> Sequence[RawMessage]:
        """Up to ``max_messages`` from the partitions not paused, each in its order."""
        ...

    def lag(self) -> dict[Key, int]:
        """Messages left to read per partition (a partition left out: unknown)."""
        ...

    def ended(self) -> set[Key]:
        """Partitions that will never send another message (a finite stream read to its end;
        a Kafka partition never ends)."""
        ...

    def pause(self, partitions: Iterable[Key] | None = None) -> None:
        """Stop reading these partitions (all, given None) until resumed."""
        ...

    def resume(self, partitions: Iterable[Key] | None = None) -> None:
        """Read these partitions (all, given None) again."""
        ...

    def store_offsets(self, offsets: Mapping[Key, int]) -> None:
        """Mark how far each partition is applied (the next offset to read)."""
        ...


def consumer_config(settings: Settings) -> dict[str, Any]:
    return {
        **DEFAULTS,
        "group.id": settings.kafka.group_id,
        **settings.kafka.librdkafka(),
        **FORCED,
    }


def check_properties(settings: Settings) -> str | None:
    """librdkafka's objection to the passthrough properties, or None. Creating a client
    validates its configuration without contacting the cluster."""
    config = consumer_config(settings)
    del config["bootstrap.servers"]  # validate only: contact no broker, log nothing
    try:
        Consumer({**config, "log_level": 0}).close()
    except KafkaException as error:
        return str(error.args[0].str())
    return None


class KafkaSource:
    """Consumes both topics in micro-batches and keeps track of offsets to store."""

    def __init__(
        self, settings: Settings, on_assign: Rebalance, on_revoke: Rebalance, on_lost: Rebalance
    ) -> None:
        self.topics = (settings.topics.predictions, settings.topics.labels)
        self._required = (*self.topics, settings.topics.dead_letters)
        self._servers = settings.kafka.bootstrap_servers
        self._timeout = settings.kafka.connect_timeout_seconds
        self._consumer = Consumer(
            {**consumer_config(settings), "on_commit": self._committed, "error_cb": self._error}
        )
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self.assignment: list[TopicPartition] = []
        self.commits_in_flight = 0
        self.commit_error: str | None = None
        self.last_commit = time.monotonic()  # of the last successful commit
        self._logged: dict[int, float] = {}  # error code -> when it was last logged
        self.unreachable: str | None = None  # set while every broker is down
        # per assigned partition, where reading starts (its committed offset, else the log's
        # start): its lag before a first message is consumed, when the position is unknown
        self._origin: dict[Key, int] = {}
        self._origin_retry = 0.0

    def check_topics(self) -> dict[str, int]:
        """Partition counts of the topics; raises KafkaSetupError if one is missing or the
        cluster does not answer within ``kafka.connect_timeout_seconds``."""
        try:
            metadata = self._consumer.list_topics(timeout=self._timeout)
        except KafkaException as error:
            raise KafkaSetupError(
                f"cannot reach Kafka at {self._servers} within "
                f"kafka.connect_timeout_seconds={self._timeout:g} "
                f"({error.args[0].str()}): check kafka.bootstrap_servers, the network and "
                f"the kafka.properties for security"
            ) from None
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
            self._origin = {}
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

    @property
    def partitions(self) -> list[Key]:
        return [(tp.topic, tp.partition) for tp in self.assignment]

    def ended(self) -> set[Key]:
        return set()

    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        """A batch of data messages. Error events are logged, or raised when fatal."""
        messages = self._consumer.consume(num_messages=max_messages, timeout=timeout)
        data = []
        if messages and self.unreachable:
            self.unreachable = None  # something came from the cluster
        for message in messages:
            error = message.error()
            if error is None:
                data.append(message)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                self._log_once_a_minute(error)
        return data

    def _error(self, error: KafkaError) -> None:
        """librdkafka's client-level errors (served inside poll): all brokers down starts
        an outage, which :meth:`probe` ends."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.unreachable = str(error.str())
        if error.fatal():
            log.error("fatal consumer error: %s", error)
        else:
            self._log_once_a_minute(error)

    def probe(self) -> bool:
        """During an outage: ask the cluster for the predictions topic's metadata (briefly);
        True, and the outage ends, when it answers."""
        try:
            self._consumer.list_topics(self.topics[0], timeout=0.5)
        except KafkaException:
            return False
        self.unreachable = None
        return True

    def _log_once_a_minute(self, error: KafkaError) -> None:
        """Transient errors (an outage) repeat at every poll: log each kind once a minute."""
        now = time.monotonic()
        if now - self._logged.get(error.code(), -60.0) >= 60.0:
            self._logged[error.code()] = now
            log.warning("consumer error (retrying): %s", error)

    def store_offsets(self, offsets: Mapping[Key, int]) -> None:
        """Mark how far each partition is applied (the next offset to read), for the next
        commit."""
        self._consumer.store_offsets(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        )

    def commit(self, offsets: Mapping[Key, int] | None = None) -> None:
        """Commit the stored offsets, or the given ones, asynchronously: the result arrives in
        ``on_commit`` (a synchronous commit blocks while the coordinator is away, up to
        ``socket.timeout.ms``). On revoke, the worker passes the revoked partitions' offsets
        explicitly: librdkafka does not finish the unassignment, so the group does not
        rebalance, while a commit is in flight (``rd_kafka_assignment_serve`` waits for
        ``rkcg_wait_commit_cnt``), so the next owner reads from where this worker stopped
        without the callback waiting for the answer."""
        try:
            if offsets is None:
                self._consumer.commit(asynchronous=True)
            elif offsets:
                chosen = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
                self._consumer.commit(offsets=chosen, asynchronous=True)
            else:
                return
            self.commits_in_flight += 1
        except KafkaException as error:
            if error.args[0].code() != KafkaError._NO_OFFSET:
                self.commit_error = str(error.args[0].str())

    def _committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self.commits_in_flight = max(0, self.commits_in_flight - 1)
        failed = error if error is not None and error.code() != KafkaError._NO_OFFSET else None
        failed = failed or next((tp.error for tp in partitions if tp.error), None)
        if failed is None:
            self.commit_error = None
            self.last_commit = time.monotonic()
        else:
            self.commit_error = str(failed.str())
            self._log_once_a_minute(failed)

    def wait_for_commits(self, timeout: float) -> bool:
        """Serve commit results (consuming nothing: every partition is paused) until none
        is in flight or ``timeout`` passes; True if every commit succeeded."""
        self.pause()
        deadline = time.monotonic() + timeout
        while self.commits_in_flight and time.monotonic() < deadline:
            self._consumer.poll(0.1)  # serves callbacks; paused partitions yield nothing
        return self.commits_in_flight == 0 and self.commit_error is None

    def pause(self, partitions: Iterable[Key] | None = None) -> None:
        """Pause every assigned partition, or the given ones."""
        chosen = self._partitions(partitions)
        if chosen:
            self._consumer.pause(chosen)

    def resume(self, partitions: Iterable[Key] | None = None) -> None:
        """Resume every assigned partition, or the given ones."""
        chosen = self._partitions(partitions)
        if chosen:
            self._consumer.resume(chosen)

    def _partitions(self, keys: Iterable[Key] | None) -> list[TopicPartition]:
        if keys is None:
            return self.assignment
        return [TopicPartition(topic, partition) for topic, partition in keys]

    def uncommitted(self) -> dict[Key, int]:
        """Per assigned partition, the next offset a restart would read from: what will be
        re-read if the last commits did not go through."""
        try:
            committed = self._consumer.committed(self.assignment, timeout=1.0)
        except KafkaException:
            return {}
        return {(tp.topic, tp.partition): tp.offset for tp in committed}

    def lag(self) -> dict[Key, int]:
        """Messages behind the end of each assigned partition (from cached watermarks); a
        partition not fetched yet has no known end and is left out. Before a partition's
        first message is consumed its position is unknown: the lag counts from where
        reading starts (a partition read to its end by its previous owner has none)."""
        if not self.assignment:
            return {}
        positions = self._consumer.position(self.assignment)
        unknown = [
            tp for tp in positions if tp.offset < 0 and (tp.topic, tp.partition) not in self._origin
        ]
        if unknown and time.monotonic() >= self._origin_retry:
            self._learn_origins(unknown)
        lags = {}
        for tp in positions:
            key = (tp.topic, tp.partition)
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            start = tp.offset if tp.offset >= 0 else self._origin.get(key, 0)
            if high >= 0:
                lags[key] = max(0, high - start)
        return lags

    def _learn_origins(self, partitions: list[TopicPartition]) -> None:
        """Where reading starts on these partitions: the group's committed offset, else
        the start of the log (``auto.offset.reset: earliest``)."""
        try:
            committed = self._consumer.committed(
                [TopicPartition(tp.topic, tp.partition) for tp in partitions], timeout=2.0
            )
        except KafkaException:
            self._origin_retry = time.monotonic() + 10.0  # an outage: not every loop
            return
        for tp in committed:
            if tp.offset >= 0:
                self._origin[(tp.topic, tp.partition)] = tp.offset
                continue
            low, _ = self._consumer.get_watermark_offsets(tp, cached=True)
            if low >= 0:
                self._origin[(tp.topic, tp.partition)] = low

    def close(self) -> None:
        self._consumer.close()
