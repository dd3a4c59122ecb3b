"""Repartition: each model version's engine state in one worker of the group.

With ``engine.mode: repartition`` a worker runs two stages (docs/architecture.md)::

    stage 1, its input partitions:  source -> decode -> admission -> dead letters
                                     -> Router: each record to the internal partition of its
                                        model version; a label to its prediction's
                                     -> internal topic (the message as read, plus its source)
                                     + each source partition's progress, to every internal
                                       partition (newest event time read, idle)
    stage 2, its internal partitions: decode -> event order over the *source* partitions
                                     -> version cap -> monitor, quality -> exporter

Labels carry no model version, so stage 1 keeps, per pending prediction, the internal
partition it went to (an id hash and 2 bytes), and holds a label that comes before its
prediction. A label whose prediction it never saw (or saw more than ``labels.ttl_seconds``
before) goes to a partition chosen by its id, where the join counts it unmatched.

Stage 2 commits no offsets: a worker that gains internal partitions rebuilds their state
from the start of the internal topic (kept ``engine.retention_hours``), and its version
series stay off /metrics until it has caught up, so a rebuilt alarm counter appears with
its whole count and ``increase()`` does not see the rebuild as new alarms.
"""

from __future__ import annotations

import base64
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streamwatch.config import Settings
from streamwatch.errors import KafkaSetupError
from streamwatch.join import EarlyLabels, PendingPredictions, id_hash
from streamwatch.records import Label, Prediction, RawMessage, Record

log = logging.getLogger(__name__)

SOURCE_HEADER = "streamwatch-source"  # "topic/partition/offset" of the message forwarded
MARKER_HEADER = "streamwatch-progress"  # a source partition's progress, not a record
Key = tuple[str, int]
# (partition, key, value, headers, topic)
Forwarded = tuple[int, bytes | None, bytes | None, Any, str]


def route_of(model: str, version: str, partitions: int) -> int:
    """The internal partition of a model version (the same in every worker)."""
    return id_hash(f"{model}\x00{version}") % partitions


def engine_topic(settings: Settings) -> str:
    return settings.engine.topic or f"{settings.kafka.group_id}-engine"


def changelog_topic(settings: Settings) -> str:
    """Stage 1's state (:class:`Router`), compacted, one partition per source partition."""
    return f"{engine_topic(settings)}-routes"


class Router:
    """Stage 1's routing: where each admitted record goes, and what it holds back.

    Its state (the route of each pending prediction, the labels held for their
    prediction) is kept per source partition, and every change to it is also written to a
    compacted changelog (:meth:`take_changes`, :meth:`restore`): a partition's next owner
    restores it there, as Kafka Streams restores a state store."""

    def __init__(self, settings: Settings, partitions: int, labels_topic: str) -> None:
        self.partitions = partitions
        self.labels_topic = labels_topic
        self.ttl = settings.labels.ttl_seconds
        self.hold = settings.labels.early_hold_seconds
        self.hold_budget = settings.labels.early_hold_max_labels
        self.hold_idle = settings.labels.early_hold_idle_seconds
        self._moved: dict[int, float] = {}  # wall clock: a partition's predictions last moved
        self.routes = PendingPredictions({"route": np.int16, "source": np.int16})
        # per labels partition: the labels held (their times), and its predictions' newest
        # event time: a held label waits for its own partition's predictions
        self.early: dict[int, EarlyLabels] = {}
        self.prediction_watermarks: dict[int, float] = {}
        self._held: dict[int, tuple[RawMessage, int, int]] = {}  # id hash -> (message, p, o)
        self.label_watermark = float("-inf")
        self._changes: list[Change] = []

    @property
    def holding(self) -> int:
        return len(self._held)

    def route(
        self,
        predictions: list[Prediction],
        labels: list[Label],
        raw: Mapping[tuple[str, int, int], RawMessage],
        predictions_topic: str,
        now: float | None = None,
    ) -> list[tuple[int, RawMessage]]:
        """The (internal partition, message) pairs to send for one decoded batch."""
        now = time.monotonic() if now is None else now
        out: list[tuple[int, RawMessage]] = []
        changes = self._changes
        if predictions:
            of_version: dict[tuple[str, str], int] = {}  # hashed once per version and batch
            for p in predictions:
                version = (p.model, p.model_version)
                if version not in of_version:
                    of_version[version] = route_of(*version, self.partitions)
            routes = np.array(
                [of_version[(p.model, p.model_version)] for p in predictions], dtype=np.int16
            )
            sources = np.array([p.partition for p in predictions], dtype=np.int16)
            keys = [id_hash(p.prediction_id) for p in predictions]
            times = np.array([p.timestamp for p in predictions])
            added = self.routes.add_many(keys, times, {"route": routes, "source": sources})
            marks = self.prediction_watermarks
            for p, r, key, new in zip(
                predictions, routes.tolist(), keys, added.tolist(), strict=True
            ):
                if p.timestamp > marks.get(p.partition, float("-inf")):
                    marks[p.partition] = p.timestamp
                    self._moved[p.partition] = now
                if new:
                    changes.append(
                        (p.partition, _key(ROUTE, key), ROUTE_VALUE.pack(r, p.timestamp))
                    )
                out.append((r, raw[(predictions_topic, p.partition, p.offset)]))
                held = self._held.pop(key, None)
                if held is not None:  # its label came first: it follows its prediction now
                    self.early[held[1]].pop(key, p.prediction_id)
                    changes.append((held[1], _key(HELD, key), None))
                    out.append((r, held[0]))
        if labels:
            keys = [id_hash(lb.prediction_id) for lb in labels]
            self.label_watermark = max(self.label_watermark, max(lb.timestamp for lb in labels))
            found, slots, _ = self.routes.take_many(keys)
            routes = self.routes.columns["route"][slots].tolist()
            it = iter(routes)
            for lb, key, known in zip(labels, keys, found.tolist(), strict=True):
                message = raw[(self.labels_topic, lb.partition, lb.offset)]
                if known:
                    changes.append((lb.partition, _key(ROUTE, key), None))
                    out.append((next(it), message))
                elif key in self._held:  # a second label while the first waits: unmatched
                    out.append((key % self.partitions, message))
                else:
                    self._hold(key, message, lb.partition, lb.offset, lb.timestamp, now)
                    changes.append(
                        (lb.partition, _key(HELD, key), _held_value(message, lb.timestamp))
                    )
        out += self.release(now)
        return out

    def _hold(
        self, key: int, message: RawMessage, partition: int, offset: int, at: float, now: float
    ) -> None:
        self._moved.setdefault(partition, now)
        self._held[key] = (message, partition, offset)
        self.early.setdefault(partition, EarlyLabels()).hold(
            key, Label("", 0.0, at, partition, offset)
        )

    def release(self, now: float) -> list[tuple[int, RawMessage]]:
        """Held labels past the early hold (or over its budget) go on to a partition chosen
        by their id, where the join counts them unmatched; routes past the TTL go."""
        expired = self.routes.expire(self.label_watermark - self.ttl)
        if len(expired):
            sources = self.routes.columns["source"][expired].tolist()
            for key, source in zip(self.routes.hashes[expired].tolist(), sources, strict=True):
                self._changes.append((source, _key(ROUTE, key), None))
        if not self._held:
            return []
        before = set(self._held)
        for partition, early in self.early.items():
            early.release_before(self.prediction_watermarks.get(partition, -1e300) - self.hold)
            if early and now - self._moved.get(partition, now) > self.hold_idle:
                early.release_all()  # its predictions stopped: they would wait for ever
        excess = len(self._held) - self.hold_budget
        if excess > 0:  # over the budget: the fullest partition's oldest first
            fullest = max(self.early.values(), key=len)
            fullest.release_oldest(excess)
        kept = {k for early in self.early.values() for k in early.labels}
        out = []
        for key in before - kept:
            message, partition, _ = self._held.pop(key)
            self._changes.append((partition, _key(HELD, key), None))
            out.append((key % self.partitions, message))
        return out

    def earliest_held(self) -> dict[int, float]:
        """Per labels partition, the event time of its oldest held label: the labels'
        progress reported to stage 2 stays behind it, so that it is not late there."""
        out: dict[int, float] = {}
        for key, (_, partition, _) in self._held.items():
            t = self.early[partition].labels[key][1]
            out[partition] = min(out.get(partition, t), t)
        return out

    def take_changes(self) -> list[Change]:
        """The changes to the state since the last call: (source partition, changelog key,
        value or None to delete), for the changelog, in order."""
        changes, self._changes = self._changes, []
        return changes

    def restore(self, partition: int, entries: Mapping[bytes, bytes], now: float) -> None:
        """A source partition's state as its changelog holds it (the live entries)."""
        keys: list[int] = []
        times: list[float] = []
        routes: list[int] = []
        unreadable = 0
        for k, value in entries.items():
            kind, key = k[:1], int.from_bytes(k[1:], "big")
            try:
                if kind == ROUTE:
                    route, at = ROUTE_VALUE.unpack(value)
                    keys.append(key)
                    routes.append(route)
                    times.append(at)
                elif kind == HELD:
                    held = orjson.loads(value)
                    offset = int(held["offset"])
                    message = Record(
                        self.labels_topic,
                        _bytes(held["value"]),
                        _bytes(held["key"]),
                        partition,
                        offset,
                        [(name, _bytes(v)) for name, v in held["headers"]],
                    )
                    self._hold(key, message, partition, offset, float(held["time"]), now)
                else:
                    unreadable += 1
            except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                unreadable += 1  # not what stage 1 writes: the state it stood for is lost
        if unreadable:
            log.warning(
                "changelog partition %d: %d entries not written by streamwatch, skipped",
                partition,
                unreadable,
            )
        if keys:
            self.routes.add_many(
                keys,
                np.array(times),
                {
                    "route": np.array(routes, dtype=np.int16),
                    "source": np.full(len(keys), partition, dtype=np.int16),
                },
            )

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget the state of revoked source partitions (their next owner restores it from
        the changelog)."""
        gone = set(partitions)
        for key in [k for k, held in self._held.items() if held[1] in gone]:
            self._held.pop(key)
        for partition in gone:
            self.early.pop(partition, None)
            self.prediction_watermarks.pop(partition, None)
            self._moved.pop(partition, None)
        routes = self.routes
        occupied = np.isfinite(routes.timestamps)
        mine = occupied & np.isin(routes.columns["source"], list(gone))
        routes.remove(np.flatnonzero(mine))


ROUTE, HELD = b"r", b"h"  # changelog key prefixes: a pending prediction's route, a held label
ROUTE_VALUE = struct.Struct(">hd")  # (internal partition, prediction event time)
Change = tuple[int, bytes, bytes | None]


def _key(kind: bytes, key: int) -> bytes:
    return kind + key.to_bytes(8, "big")


def _held_value(message: RawMessage, at: float) -> bytes:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return orjson.dumps(
        {
            "offset": message.offset(),
            "time": at,
            "key": _text(message.key()),
            "value": _text(message.value()),
            "headers": [[k, _text(v.encode() if isinstance(v, str) else v)] for k, v in pairs],
        }
    )


def _text(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


class EngineLink:
    """The internal topic: stage 1's producer, stage 2's consumer."""

    def __init__(self, settings: Settings) -> None:
        self.topic = engine_topic(settings)
        self.changelog = changelog_topic(settings)
        self.settings = settings
        config = settings.kafka.librdkafka()
        self._admin_config = config
        # the largest message the contract admits must fit, forwarded (plus a header) and,
        # for a held label, in the changelog (base64 in JSON): librdkafka refuses a message
        # over message.max.bytes (1 MB by default) by raising, the broker by failing it
        self.max_bytes = 2 * settings.contract.max_message_bytes + 65_536
        self._producer = Producer(
            {
                **config,
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.max.bytes": self.max_bytes,
            }
        )
        self._consumer = Consumer(
            {
                **config,
                "group.id": f"{settings.kafka.group_id}-engine",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self.partitions = 0
        self.assignment: list[TopicPartition] = []
        self._ends: dict[int, int] = {}  # at assignment: each partition's end (catch-up)
        self._unacked = 0
        self._failed: list[Forwarded] = []
        self.last_error: str | None = None
        self._lock = threading.Lock()

    # -- setup ----------------------------------------------------------------------------
    def ensure_topic(self, partitions: int, timeout: float) -> None:
        """Create the internal topic and stage 1's changelog (as many partitions as the
        input topics), or check the ones there."""
        retention = int(self.settings.engine.retention_hours * 3_600_000)
        size = {"max.message.bytes": str(self.max_bytes)}
        self._ensure(self.topic, partitions, {"retention.ms": str(retention), **size}, timeout)
        self._ensure(self.changelog, partitions, {"cleanup.policy": "compact", **size}, timeout)
        self.partitions = partitions

    def _ensure(self, topic: str, partitions: int, config: dict[str, str], timeout: float) -> None:
        admin = AdminClient(self._admin_config)
        spec = NewTopic(topic, num_partitions=partitions, replication_factor=-1, config=config)
        try:
            admin.create_topics([spec])[topic].result(timeout=timeout)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaSetupError(
                    f"cannot create the engine topic {topic!r}: {error.args[0].str()}; "
                    f"create it with {partitions} partitions, or set engine.topic"
                ) from None
        deadline = time.monotonic() + timeout
        while True:  # another worker may have just created it: its metadata comes shortly
            meta = admin.list_topics(topic, timeout=timeout).topics[topic]
            if meta.partitions or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if len(meta.partitions) != partitions:
            raise KafkaSetupError(
                f"the engine topic {topic!r} has {len(meta.partitions)} partitions, the "
                f"input topics {partitions}: delete it (it is rebuilt) or set engine.topic"
            )

    def subscribe(
        self,
        on_assign: Callable[[list[int]], None],
        on_revoke: Callable[[list[int]], None],
    ) -> None:
        def assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.assignment = list(partitions)
            self._ends = {}
            for tp in partitions:
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
                self._ends[tp.partition] = high
            log.info("engine: assigned internal partitions %s", [tp.partition for tp in partitions])
            on_assign([tp.partition for tp in partitions])

        def revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            log.info("engine: revoked internal partitions %s", [tp.partition for tp in partitions])
            self.assignment = []
            on_revoke([tp.partition for tp in partitions])

        self._consumer.subscribe([self.topic], on_assign=assign, on_revoke=revoke, on_lost=revoke)

    # -- stage 1 ------------------------------------------------------------------------
    def send(self, partition: int, message: RawMessage) -> None:
        """Forward a message as read, with its source."""
        headers = message.headers()
        if isinstance(headers, dict):
            headers = list(headers.items())
        source = f"{message.topic()}/{message.partition()}/{message.offset()}".encode()
        self._produce(
            partition, message.key(), message.value(), [*(headers or []), (SOURCE_HEADER, source)]
        )

    def progress(self, source: Key, newest: float | None, idle: bool) -> None:
        """A source partition's progress, to every internal partition."""
        value = orjson.dumps(
            {"topic": source[0], "partition": source[1], "newest": newest, "idle": idle}
        )
        for partition in range(self.partitions):
            self._produce(partition, None, value, [(MARKER_HEADER, b"1")])

    def record(self, changes: Iterable[Change]) -> None:
        """Changes to stage 1's state, to its changelog (flushed with the forwarded records,
        before the input offsets they reflect are committed)."""
        for partition, key, value in changes:
            self._produce(partition, key, value, None, self.changelog)

    def restore(self, partitions: list[int], timeout: float) -> dict[int, dict[bytes, bytes]]:
        """Stage 1's state of these source partitions: their changelog read to its end,
        the last value of each key (deleted keys left out)."""
        if not partitions:
            return {}
        consumer = Consumer(
            {
                **self._admin_config,
                "group.id": f"{self.settings.kafka.group_id}-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        out: dict[int, dict[bytes, bytes | None]] = {p: {} for p in partitions}
        deadline = time.monotonic() + timeout
        try:
            ends = {}
            for p in partitions:
                low, high = self._watermarks(consumer, p, deadline)
                if high > low:
                    ends[p] = high
            consumer.assign([TopicPartition(self.changelog, p, OFFSET_BEGINNING) for p in ends])
            while ends:
                if time.monotonic() > deadline:
                    raise KafkaSetupError(
                        f"could not read the changelog {self.changelog!r} partitions "
                        f"{sorted(ends)} within {timeout:.0f}s"
                    )
                for m in consumer.consume(10_000, 0.5):
                    p, error = m.partition() or 0, m.error()
                    if error is None:
                        out[p][m.key() or b""] = m.value()
                        if (m.offset() or 0) + 1 >= ends.get(p, 0):
                            ends.pop(p, None)
                    elif error.code() == KafkaError._PARTITION_EOF and (
                        (m.offset() or 0) >= ends.get(p, 0)
                    ):
                        ends.pop(p, None)
        finally:
            consumer.close()
        return {p: {k: v for k, v in kv.items() if v is not None} for p, kv in out.items()}

    def _watermarks(self, consumer: Consumer, partition: int, deadline: float) -> tuple[int, int]:
        """A changelog partition's (low, high) offsets, asked again while the broker is not
        ready to answer (a topic just created has no leader yet)."""
        while True:
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.changelog, partition),
                    timeout=max(0.1, deadline - time.monotonic()),
                )
                return int(low), int(high)
            except KafkaException as error:
                if time.monotonic() > deadline:
                    raise KafkaSetupError(
                        f"cannot read the changelog {self.changelog!r} partition {partition}: "
                        f"{error.args[0].str()}"
                    ) from None
                log.info("changelog %s/%d: %s; asking again", self.changelog, partition, error)
                time.sleep(0.2)

    def _produce(
        self,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        topic: str | None = None,
    ) -> None:
        args: Forwarded = (partition, key, value, headers, topic or self.topic)

        def delivered(error: KafkaError | None, _message: Message) -> None:
            self._delivered(error, args)

        while True:
            try:
                self._producer.produce(
                    args[4],
                    value=value,
                    key=key,
                    headers=headers,
                    partition=partition,
                    on_delivery=delivered,
                )
                with self._lock:
                    self._unacked += 1
                return
            except BufferError:  # the local queue is full: serve deliveries, then retry
                self._producer.poll(0.1)

    def _delivered(self, error: KafkaError | None, args: Forwarded) -> None:
        with self._lock:
            self._unacked -= 1
            if error is not None:
                self.last_error = str(error.str())
                self._failed.append(args)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float) -> bool:
        """Every forwarded message acknowledged (failed ones produced again)? The checkpoint
        commits the input offsets only then."""
        with self._lock:
            failed, self._failed = self._failed, []
        for partition, key, value, headers, topic in failed:
            self._produce(partition, key, value, headers, topic)
        self._producer.flush(timeout)
        with self._lock:
            return self._unacked == 0 and not self._failed

    # -- stage 2 ------------------------------------------------------------------------
    def consume(self, max_messages: int, timeout: float) -> list[Message]:
        out = []
        for m in self._consumer.consume(max_messages, timeout):
            error = m.error()
            if error is None:
                out.append(m)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("engine topic: %s", error.str())
        return out

    def caught_up(self) -> bool:
        """Has every assigned internal partition been read up to where it ended when it was
        assigned?"""
        if not self.assignment:
            return True
        for tp in self._consumer.position(self.assignment):
            end = self._ends.get(tp.partition, 0)
            if end > 0 and (tp.offset < 0 or tp.offset < end):
                return False
        return True

    def close(self) -> None:
        self._producer.flush(5)
        self._consumer.close()


def parse_source(
    message: RawMessage, topics: tuple[str, str], partitions: int
) -> str | tuple[Key, tuple[float | None, bool] | None, int]:
    """What stage 1 sent: ((source topic, partition), progress or None, source offset) for
    a forwarded record or a progress report; else why it is not one (dead-lettered)."""
    try:
        if header(message, MARKER_HEADER) is not None:
            body = orjson.loads(message.value() or b"")
            key = (str(body["topic"]), int(body["partition"]))
            newest = None if body["newest"] is None else float(body["newest"])
            progress: tuple[float | None, bool] | None = (newest, bool(body["idle"]))
            offset = 0
        else:
            source = header(message, SOURCE_HEADER)
            if source is None:
                return f"no {SOURCE_HEADER} header: not a record streamwatch forwarded"
            topic, partition, at = source.decode().rsplit("/", 2)
            key, progress, offset = (topic, int(partition)), None, int(at)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        return f"unreadable engine message: {type(e).__name__}: {e}"[:300]
    if key[0] not in topics or not 0 <= key[1] < partitions:
        return f"source {key[0]}/{key[1]} is not one of this group's input partitions"
    return key, progress, offset


def header(message: RawMessage, name: str) -> bytes | None:
    headers = message.headers() or []
    for k, v in headers.items() if isinstance(headers, dict) else headers:
        if k == name:
            return v if isinstance(v, bytes) else None
    return None
