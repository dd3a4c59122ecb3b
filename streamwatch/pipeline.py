"""Pipeline: the stages after the source, shared by every source (see :mod:`streamwatch.loop`).

    decode (bytes to records) → admission (event-time bounds) → rejections to dead letters
    → event order (one order, whatever the partitioning) → version cap → monitor (drift)
    and quality (join, windows, concept detectors)

:meth:`Pipeline.process` runs them on one batch; :meth:`Pipeline.process_engine` is stage 2
of repartition (records another worker read and admitted).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from streamwatch.admission import EventClock, VersionCap
from streamwatch.config import Settings
from streamwatch.deadletter import DeadLetters
from streamwatch.decode import Decoder
from streamwatch.exporter import Telemetry
from streamwatch.monitor import Monitor
from streamwatch.ordering import EventOrder, Key
from streamwatch.quality import Quality
from streamwatch.records import (
    Alarm,
    AlarmKey,
    ConceptAlarm,
    Label,
    Prediction,
    RawMessage,
    Rejection,
)
from streamwatch.repartition import SOURCE_HEADER, parse_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoded:
    """A batch after decoding and admission: valid records, and the rejected messages."""

    predictions: list[Prediction]
    labels: list[Label]
    rejected: list[Rejection]


@dataclass(frozen=True)
class Outcome:
    """What one batch produced besides its counts."""

    rejected: list[Rejection]
    alarms: list[Alarm]
    concept_alarms: list[ConceptAlarm]
    # the predictions applied (before the version cap), in their one order; labels applied
    predictions: list[Prediction] = field(default_factory=list)
    labels: int = 0


class Pipeline:
    """The stages after the source, shared by the Kafka worker, the in-memory demo and
    replay: :meth:`decode` (decoder, then admission), :meth:`reject` (dead letters and
    counters), the event order, then :meth:`apply` (the version cap, the monitor, the
    quality side) on what the order releases. :meth:`process` runs them on one batch."""

    def __init__(
        self, settings: Settings, monitor: Monitor, quality: Quality, telemetry: Telemetry
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.decoder = Decoder(settings)
        self.clock = EventClock(settings)
        self.versions = VersionCap(settings)
        self.monitor = monitor
        self.quality = quality
        self.telemetry = telemetry
        self.order = self._new_order(newest_from_records=True)
        self.processed = 0
        self.held_by_router = 0  # repartition: labels stage 1 holds for their prediction
        self.source_partitions = 1  # repartition: of each input topic (lanes)
        # repartition: stage 1 counts the events it forwards (once), stage 2 does not (it
        # applies them again when it rebuilds); rebuilding: stage 2 is catching up
        self.count_events = True
        self.rebuilding = False
        self._announced: set[AlarmKey] = set()
        self._moved_at = self._stall_logged = time.monotonic()  # the order's last release

    def process(
        self,
        messages: Sequence[RawMessage],
        dead_letters: DeadLetters | None,
        now: float | None = None,
        lags: Mapping[Key, int] | None = None,
        paused: Iterable[Key] = (),
    ) -> Outcome:
        """One batch: decode and admit; send (given a producer) and count the rejected;
        add the admitted to the event order; apply what it releases (``now``, ``lags`` and
        ``paused``: see :meth:`EventOrder.release`)."""
        decoded = self.decode(messages)
        self.reject(decoded.rejected, dead_letters)
        self.processed += len(messages)
        now = time.monotonic() if now is None else now
        self.order.add(decoded.predictions, decoded.labels, now)
        released = self.order.release(now, lags, paused)
        self._watch_order(len(released[0]) + len(released[1]), now)
        outcome = self.apply(Decoded(*released, decoded.rejected))
        self._count_order()
        return outcome

    def process_engine(
        self,
        messages: Sequence[Message],
        dead_letters: DeadLetters | None,
        now: float,
    ) -> Outcome:
        """Stage 2 of repartition: messages of the internal topic (records as stage 1 read
        and admitted them, and the source partitions' progress) through the event order to
        the engine. A lane is idle only when stage 1 reports it idle."""
        predictions: list[Prediction] = []
        labels: list[Label] = []
        rejected: list[Rejection] = []
        topics = (self.topics.predictions, self.topics.labels)
        for m in messages:
            # a lane: one source partition's records within one internal partition, in the
            # order stage 1 sent them (its progress reports follow them there)
            base = (m.partition() or 0) * self.source_partitions
            source = parse_source(m, topics, self.source_partitions)
            if isinstance(source, str):  # not what stage 1 sends: dead-lettered, not a crash
                rejected.append(
                    Rejection(
                        m.topic() or "",
                        m.partition() or 0,
                        m.offset() or 0,
                        "missing_field",
                        source,
                        m.value(),
                        m.key(),
                        m.headers(),  # type: ignore[arg-type]
                    )
                )
                continue
            (topic, partition), progress, offset = source
            if progress is not None:
                newest, idle = progress
                self.order.progress((topic, base + partition), newest, idle, now)
                continue
            partition += base  # the lane (the join is per lane)
            read = m.headers() or []
            pairs = read.items() if isinstance(read, dict) else read
            headers = [(k, v) for k, v in pairs if k != SOURCE_HEADER]
            args = (m.value(), m.key(), headers, topic, partition, offset)
            record = (
                self.decoder.prediction(*args)
                if topic == self.topics.predictions
                else self.decoder.label(*args)
            )
            if isinstance(record, Rejection):  # stage 1 decoded it: another configuration
                rejected.append(record)
            elif isinstance(record, Prediction):
                predictions.append(record)
            else:
                labels.append(record)
        self.reject(rejected, dead_letters)
        self.order.add(predictions, labels, now)
        released = self.order.release(now)
        self._watch_order(len(released[0]) + len(released[1]), now)
        outcome = self.apply(Decoded(*released, rejected))
        self._count_order()
        return outcome

    def reset_engine(self, internal: list[int], source_partitions: int, now: float) -> None:
        """Stage 2 of repartition, on a change of its internal partitions: start the
        engine afresh (it rebuilds from the start), waiting for every lane: each source
        partition of both topics within each ``internal`` partition."""
        self.monitor.reset()
        self.quality.reset()
        self.versions = VersionCap(self.settings)
        self._announced.clear()
        self.count_events = False
        self.order = self._new_order(newest_from_records=False)
        self.source_partitions = source_partitions
        lanes = [j * source_partitions + p for j in internal for p in range(source_partitions)]
        topics = (self.topics.predictions, self.topics.labels)
        self.order.assign([(t, lane) for lane in lanes for t in topics], now)

    def _new_order(self, newest_from_records: bool) -> EventOrder:
        et = self.settings.event_time
        return EventOrder(
            self.topics.predictions,
            self.topics.labels,
            et.reorder_seconds,
            et.idle_seconds,
            et.max_waiting_events,
            newest_from_records,
        )

    @property
    def handled(self) -> int:
        """Messages read and done with (applied or rejected): not those still waiting in
        the event order, nor those left with revoked partitions (their next owner reads
        them again). With repartition, stage 1's: forwarded or rejected."""
        if self.order.newest_from_records:
            return self.processed - self.order.waiting - self.order.dropped
        return self.processed - self.held_by_router

    def drain(self) -> Outcome:
        """Apply every record still waiting (the end of a finite stream)."""
        outcome = self.apply(Decoded(*self.order.flush(), []))
        self._count_order()
        return outcome

    def reject(self, rejected: list[Rejection], dead_letters: DeadLetters | None) -> None:
        """Send each rejected message to the dead-letter topic (given a producer); count it."""
        for r in rejected:
            if dead_letters is not None:
                dead_letters.send(r)
            self.telemetry.invalid.labels(r.topic, r.reason).inc()

    def _watch_order(self, released: int, now: float) -> None:
        """Log, at most every 30 s, the partitions the event order waits for when records
        wait and none left for 30 s (a partition that neither moves nor goes idle)."""
        if released or not self.order.waiting:
            self._moved_at = now
        elif now - self._moved_at >= 30.0 and now - self._stall_logged >= 30.0:
            self._stall_logged = now
            log.warning(
                "event order: %d records have waited %.0fs; held back by %s",
                self.order.waiting,
                now - self._moved_at,
                [f"{t}/{p} (newest {newest})" for (t, p), newest in self.order.holding_back()],
            )

    def _count_order(self) -> None:
        t, order = self.telemetry, self.order
        waiting: Counter[str] = Counter()
        for key, state in order.partitions.items():
            waiting[key[0]] += len(state.waiting)
        for topic in order.topics:
            t.waiting.labels(topic).set(waiting.get(topic, 0))
            t.out_of_order.labels(topic).inc(order.late[topic])
            t.forced.labels(topic).inc(order.forced[topic])
            order.late[topic] = order.forced[topic] = 0

    def decode(self, messages: Sequence[RawMessage]) -> Decoded:
        """Decode each message, in arrival order, and admit it (event-time bounds)."""
        predictions: list[Prediction] = []
        labels: list[Label] = []
        rejected: list[Rejection] = []
        predictions_topic = self.topics.predictions
        clock = self.clock
        clock.start_batch()
        for m in messages:
            topic = m.topic() or ""
            headers = m.headers()
            if isinstance(headers, dict):
                headers = list(headers.items())
            partition = m.partition() or 0
            args = (m.value(), m.key(), headers, topic, partition, m.offset() or 0)
            record = (
                self.decoder.prediction(*args)
                if topic == predictions_topic
                else self.decoder.label(*args)
            )
            if isinstance(record, Rejection):
                rejected.append(record)
                continue
            late = clock.check(topic, partition, record.timestamp)
            if late is not None:
                reason, detail = late
                rejected.append(Rejection(topic, partition, args[5], reason, detail, *args[:3]))
            elif isinstance(record, Prediction):
                predictions.append(record)
            else:
                labels.append(record)
        return Decoded(predictions, labels, rejected)

    def apply(self, decoded: Decoded) -> Outcome:
        """Apply records in their one order (the rejected only to count type errors):
        update the monitor and the quality side; return the alarms raised."""
        released, labels, rejected = decoded.predictions, decoded.labels, decoded.rejected
        predictions = self._cap_versions(released)
        alarms = self.monitor.apply(predictions, rejected)
        for alarm in alarms:
            # A drift that persists keeps firing (detectors restart after each alarm): the
            # first of each detector is a warning, the rest are in the counters.
            level = logging.DEBUG if alarm.key in self._announced else logging.WARNING
            self._announced.add(alarm.key)
            log.log(
                level,
                "drift alarm: model=%s version=%s slice=%s %s=%s detector=%s at offset %d",
                alarm.model,
                alarm.model_version,
                alarm.slice,
                alarm.signal,
                alarm.feature,
                alarm.detector,
                alarm.offset,
            )
        concept_alarms = self.quality.apply(predictions, labels)
        for concept in concept_alarms:
            log.info(
                "concept drift alarm: model=%s version=%s slice=%s detector=%s at "
                "prediction_id=%s (%s partition %d offset %d)",
                concept.model,
                concept.model_version,
                concept.slice,
                concept.detector,
                concept.prediction_id,
                self.topics.predictions if concept.on_predictions else self.topics.labels,
                concept.partition,
                concept.offset,
            )
        delays = self.quality.take_label_delays()
        if not self.rebuilding:  # a rebuild (repartition) applies events seen before
            children: dict[str, Any] = {}  # one labels() lookup per model, not per label
            for model, delay in delays:
                child = children.get(model)
                if child is None:
                    child = children[model] = self.telemetry.label_delay.labels(model)
                child.observe(delay)
        self._retire_idle_versions()
        if self.count_events:
            self._count(self.topics.predictions, predictions, labels)
        return Outcome(rejected, alarms, concept_alarms, released, len(labels))

    def _retire_idle_versions(self) -> None:
        """One clock for both sides (predictions and joined labels): an idle version leaves
        the drift and the quality series together."""
        shared = self.quality.activity
        if self.quality.owns_activity or self.monitor.activity is not shared:
            return  # each side keeps its own clock (built apart, as in some tests)
        idle = shared.take_idle()
        if idle:
            log.info("retiring idle model versions %s", idle)
            self.monitor.retire(idle)
            self.quality.retire(idle)

    def _cap_versions(self, predictions: list[Prediction]) -> list[Prediction]:
        capped, overflow = self.versions.apply(predictions)
        for model, version in self.versions.take_displaced():
            log.info(
                "model %s version %s lost its place among the tracked versions", model, version
            )
            self.monitor.forget_version(model, version)
            self.quality.forget_version(model, version)
        t = self.telemetry
        for model, n in overflow.items():
            if not self.rebuilding:
                t.version_overflow.labels(model).inc(n)
        for model, n in self.versions.tracked().items():
            t.versions_tracked.labels(model).set(n)
        return capped

    def count(self, predictions: list[Prediction], labels: list[Label]) -> None:
        """Count events (repartition: stage 1, as it forwards them)."""
        self._count(self.topics.predictions, predictions, labels)

    def _count(
        self, predictions_topic: str, predictions: list[Prediction], labels: list[Label]
    ) -> None:
        t = self.telemetry
        for model, n in Counter(p.model for p in predictions).items():
            t.events.labels(predictions_topic, model).inc(n)
        newest: dict[str, float] = {}
        for p in predictions:
            if p.timestamp > newest.get(p.model, float("-inf")):
                newest[p.model] = p.timestamp
        for model, ts in newest.items():
            t.last_event.labels(predictions_topic, model).set(ts)
        if labels:
            # Labels carry no model until they are joined to their prediction.
            t.events.labels(self.topics.labels, "").inc(len(labels))
            t.last_event.labels(self.topics.labels, "").set(max(x.timestamp for x in labels))
