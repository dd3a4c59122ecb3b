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

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streamwatch.config import Settings
from streamwatch.decode import Label, Prediction, RawMessage
from streamwatch.errors import KafkaSetupError
from streamwatch.join import EarlyLabels, PendingPredictions, id_hash

log = logging.getLogger(__name__)

SOURCE_HEADER = "streamwatch-source"  # "topic/partition/offset" of the message forwarded
MARKER_HEADER = "streamwatch-progress"  # a source partition's progress, not a record
Key = tuple[str, int]
Forwarded = tuple[int, bytes | None, bytes | None, Any]  # (partition, key, value, headers)


def route_of(model: str, version: str, partitions: int) -> int:
    """The internal partition of a model version (the same in every worker)."""
    return id_hash(f"{model}\x00{version}") % partitions


def engine_topic(settings: Settings) -> str:
    return settings.engine.topic or f"{settings.kafka.group_id}-engine"


class Router:
    """Stage 1's routing: where each admitted record goes, and what it holds back."""

    def __init__(self, settings: Settings, partitions: int, labels_topic: str) -> None:
        self.partitions = partitions
        self.labels_topic = labels_topic
        self.ttl = settings.labels.ttl_seconds
        self.hold = settings.labels.early_hold_seconds
        self.hold_budget = settings.labels.early_hold_max_labels
        self.hold_idle = settings.labels.early_hold_idle_seconds
        self._moved: dict[int, float] = {}  # wall clock: a partition's predictions last moved
        self.routes = PendingPredictions({"route": np.int16})
        # per labels partition: the labels held (their times), and its predictions' newest
        # event time: a held label waits for its own partition's predictions
        self.early: dict[int, EarlyLabels] = {}
        self.prediction_watermarks: dict[int, float] = {}
        self._held: dict[int, tuple[RawMessage, int, int]] = {}  # id hash -> (message, p, o)
        self.label_watermark = float("-inf")

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
        if predictions:
            of_version: dict[tuple[str, str], int] = {}  # hashed once per version and batch
            for p in predictions:
                version = (p.model, p.model_version)
                if version not in of_version:
                    of_version[version] = route_of(*version, self.partitions)
            routes = np.array(
                [of_version[(p.model, p.model_version)] for p in predictions], dtype=np.int16
            )
            keys = [id_hash(p.prediction_id) for p in predictions]
            times = np.array([p.timestamp for p in predictions])
            self.routes.add_many(keys, times, {"route": routes})
            marks = self.prediction_watermarks
            for p, r, key in zip(predictions, routes.tolist(), keys, strict=True):
                if p.timestamp > marks.get(p.partition, float("-inf")):
                    marks[p.partition] = p.timestamp
                    self._moved[p.partition] = now
                out.append((r, raw[(predictions_topic, p.partition, p.offset)]))
                held = self._held.pop(key, None)
                if held is not None:  # its label came first: it follows its prediction now
                    self.early[held[1]].pop(key)
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
                    out.append((next(it), message))
                elif key in self._held:  # a second label while the first waits: unmatched
                    out.append((key % self.partitions, message))
                else:
                    self._moved.setdefault(lb.partition, now)
                    self._held[key] = (message, lb.partition, lb.offset)
                    self.early.setdefault(lb.partition, EarlyLabels()).hold(key, 0.0, lb.timestamp)
        out += self.release(now)
        return out

    def release(self, now: float) -> list[tuple[int, RawMessage]]:
        """Held labels past the early hold (or over its budget) go on to a partition chosen
        by their id, where the join counts them unmatched; routes past the TTL go."""
        self.routes.expire(self.label_watermark - self.ttl)
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
            out.append((key % self.partitions, self._held.pop(key)[0]))
        return out

    def earliest_held(self) -> dict[int, float]:
        """Per labels partition, the event time of its oldest held label: the labels'
        progress reported to stage 2 stays behind it, so that it is not late there."""
        out: dict[int, float] = {}
        for key, (_, partition, _) in self._held.items():
            t = self.early[partition].labels[key][1]
            out[partition] = min(out.get(partition, t), t)
        return out

    def next_offsets(self, consumed: Mapping[Key, int]) -> dict[Key, int]:
        """Offsets a commit may go up to: never past a label still held here."""
        out = dict(consumed)
        for _, partition, offset in self._held.values():
            key = (self.labels_topic, partition)
            if key in out:
                out[key] = min(out[key], offset)
        return out

    def revoke(self, labels_partitions: Iterable[int]) -> None:
        """Held labels of revoked partitions go (their next owner reads them again)."""
        gone = set(labels_partitions)
        for key in [k for k, held in self._held.items() if held[1] in gone]:
            self._held.pop(key)
        for partition in gone:
            self.early.pop(partition, None)


class EngineLink:
    """The internal topic: stage 1's producer, stage 2's consumer."""

    def __init__(self, settings: Settings) -> None:
        self.topic = engine_topic(settings)
        self.settings = settings
        config = settings.kafka.librdkafka()
        self._admin_config = config
        self._producer = Producer({**config, "enable.idempotence": True, "linger.ms": 5})
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
        """Create the internal topic (as many partitions as the input topics), or check the
        one there."""
        admin = AdminClient(self._admin_config)
        retention = int(self.settings.engine.retention_hours * 3_600_000)
        spec = NewTopic(
            self.topic,
            num_partitions=partitions,
            replication_factor=-1,
            config={"retention.ms": str(retention)},
        )
        try:
            admin.create_topics([spec])[self.topic].result(timeout=timeout)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaSetupError(
                    f"cannot create the engine topic {self.topic!r}: {error.args[0].str()}; "
                    f"create it with {partitions} partitions, or set engine.topic"
                ) from None
        deadline = time.monotonic() + timeout
        while True:  # another worker may have just created it: its metadata comes shortly
            meta = admin.list_topics(self.topic, timeout=timeout).topics[self.topic]
            if meta.partitions or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if len(meta.partitions) != partitions:
            raise KafkaSetupError(
                f"the engine topic {self.topic!r} has {len(meta.partitions)} partitions, the "
                f"input topics {partitions}: delete it (it is rebuilt) or set engine.topic"
            )
        self.partitions = partitions

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

    def _produce(
        self, partition: int, key: bytes | None, value: bytes | None, headers: Any
    ) -> None:
        args: Forwarded = (partition, key, value, headers)

        def delivered(error: KafkaError | None, _message: Message) -> None:
            self._delivered(error, args)

        while True:
            try:
                self._producer.produce(
                    self.topic,
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
        for partition, key, value, headers in failed:
            self._produce(partition, key, value, headers)
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

    def lags(self) -> dict[int, int]:
        """Messages left to read per assigned internal partition (cached watermarks)."""
        out = {}
        for tp in self._consumer.position(self.assignment) if self.assignment else []:
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                out[tp.partition] = max(0, high - tp.offset) if tp.offset >= 0 else high
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
