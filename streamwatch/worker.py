"""Worker: the consume → decode → admit → monitor → store loop, with checkpoints and rebalances.

One iteration::

    consume a batch (short timeout, so a stop request is seen within a second)
    decode every message, then admit it (event-time bounds);
    rejections → dead-letter producer + invalid counter
    admitted records wait in the event order (streamwatch/ordering) until every owned
    partition has passed their event time; those released, in (event time, id) order,
    go through the model-version cap to the monitor and the quality side
    store the offsets up to the first record still waiting
    pause the partitions that run ahead of the other topic in event time (alignment)

A checkpoint, every ``worker.commit_interval_seconds``, on revoke and at shutdown, runs in
this order, and a later step never runs if an earlier one failed:

    1. (state changelog: comes with the durability issue)
    2. flush the dead-letter producer: every rejected message is acknowledged
    3. commit the stored offsets (asynchronously: results arrive in the next polls)

If step 2 fails (the dead-letter topic is unreachable), nothing is committed and
consumption pauses (backpressure) until the letters are acknowledged. No outage ends the
process: the loop keeps polling, ``/readyz`` says what is wrong, and it resumes by itself.
On SIGTERM it finishes the batch, tries the checkpoint for ``worker.shutdown_grace_seconds``
and exits 0, logging what a restart will re-read if the commit did not go through.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaException, Message, TopicPartition

from streamwatch.admission import EventClock, VersionCap
from streamwatch.alignment import Alignment
from streamwatch.config import Settings
from streamwatch.deadletter import DeadLetters
from streamwatch.decode import Decoder
from streamwatch.errors import ConfigError, ConfigProblem, KafkaSetupError
from streamwatch.exporter import Health, Telemetry
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
from streamwatch.repartition import (
    SOURCE_HEADER,
    EngineLink,
    Router,
    parse_source,
)
from streamwatch.source import Source

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
        predictions, labels, rejected = decoded.predictions, decoded.labels, decoded.rejected
        predictions = self._cap_versions(predictions)
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
                "concept drift alarm: model=%s version=%s slice=%s detector=%s",
                concept.model,
                concept.model_version,
                concept.slice,
                concept.detector,
            )
        delays = self.quality.take_label_delays()
        if not self.rebuilding:  # a rebuild (repartition) applies events seen before
            for model, delay in delays:
                self.telemetry.label_delay.labels(model).observe(delay)
        self._retire_idle_versions()
        if self.count_events:
            self._count(self.topics.predictions, predictions, labels)
        return Outcome(rejected, alarms, concept_alarms)

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


class Worker:
    """A consumer-group member: runs the pipeline on Kafka until asked to stop."""

    def __init__(self, settings: Settings, pipeline: Pipeline, health: Health) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.health = health
        self.telemetry = pipeline.telemetry
        try:
            self.dead_letters = DeadLetters(
                settings.topics.dead_letters, settings.kafka.librdkafka()
            )
            self.source = Source(settings, self._assigned, self._revoked, self._lost)
        except KafkaException as error:  # librdkafka refused a property
            raise ConfigError(
                "kafka.properties",
                [
                    ConfigProblem(
                        "kafka.properties",
                        str(error.args[0].str()),
                        "use a property librdkafka knows (see librdkafka's CONFIGURATION.md)",
                    )
                ],
            ) from None
        self._lag_series: set[tuple[str, str]] = set()
        self._paused = False  # backpressure: a topic we produce to does not acknowledge
        self._pause_reason = ""
        align = settings.event_time.align_seconds
        topics = settings.topics
        self.alignment = (
            None if align is None else Alignment(topics.predictions, topics.labels, align)
        )
        self._stopping = False
        # at a stop, apply the records still waiting in the event order (the demo's finite
        # stream); `run` leaves them uncommitted for the next start to read
        self.drain_on_stop = False
        # per partition: the next offset after the last one read, and the offset stored
        self._consumed: dict[Key, int] = {}
        self._stored: dict[Key, int] = {}
        # repartition (engine.mode): stage 1 routes, stage 2 reads the internal topic
        self.link = EngineLink(settings) if settings.engine.mode == "repartition" else None
        self.router: Router | None = None
        self._sources: list[Key] = []  # every source partition (both topics)
        self._last_read: dict[Key, float] = {}  # wall clock of each partition's last message

    def check(self) -> None:
        """Refuse to start on an unreachable cluster, missing topics or topics that are not
        co-partitioned; read the dead-letter topic's message size limit."""
        counts = self.source.check_topics()
        predictions, labels = self.source.topics
        if counts[predictions] != counts[labels]:
            raise KafkaSetupError(
                f"topics {predictions!r} ({counts[predictions]} partitions) and {labels!r} "
                f"({counts[labels]} partitions) must have the same partition count, so that "
                f"a prediction and its label land on the same worker: repartition one of them"
            )
        self.dead_letters.check(self.settings.kafka.connect_timeout_seconds)
        if self.link is not None:
            partitions = counts[predictions]
            self.link.ensure_topic(partitions, self.settings.kafka.connect_timeout_seconds)
            self.router = Router(self.settings, partitions, labels)
            self._sources = [(t, p) for p in range(partitions) for t in (predictions, labels)]

    def run(self, stop: threading.Event) -> bool:
        """Consume until ``stop`` is set, then finish the batch, checkpoint and close.
        Returns False when the consumer could not close within the grace period (an
        outage): the caller should then exit without waiting for it."""
        w = self.settings.worker
        self.check()
        deadline = float("inf")
        try:
            self.source.subscribe()
            if self.link is not None:
                self.pipeline.reset_engine([], len(self._sources) // 2, time.monotonic())
                self.link.subscribe(self._engine_assigned, self._engine_revoked)
            last_commit = time.monotonic()
            while not stop.is_set():
                messages = self.source.consume(w.batch_size, w.poll_timeout_seconds)
                now = self.health.last_poll = time.monotonic()
                lags = self.source.lag()
                # for the event order, a partition not fetched yet counts as behind (never
                # idle), so that a slow first fetch does not let the others run ahead of it
                behind = {(tp.topic, tp.partition): 1 for tp in self.source.assignment}
                order_lags = behind | lags
                if self.link is not None:
                    self._repartition(messages, now, order_lags)
                elif messages or self.pipeline.order.waiting or self.pipeline.quality.holding:
                    paused = self._held()
                    with self.telemetry.batch_duration.time():
                        self.pipeline.process(messages, self.dead_letters, now, order_lags, paused)
                    self._store(messages)
                self._align(lags)
                if time.monotonic() - last_commit >= w.commit_interval_seconds:
                    self.checkpoint(min(1.0, w.commit_interval_seconds + 0.1))
                    self._export_lag()
                    last_commit = time.monotonic()
                self._report_health()
            deadline = time.monotonic() + w.shutdown_grace_seconds
            if self.drain_on_stop:  # a finite stream (the demo): apply what still waits
                self.pipeline.drain()
            self._stopping = True
            self._final_checkpoint(w.shutdown_grace_seconds * 0.75)
        finally:
            self._stopping = True
            self.health.assigned = 0
            closed = self._close(max(1.0, deadline - time.monotonic()))
        return closed

    def _close(self, timeout: float) -> bool:
        """Close the consumer (leaving the group) within ``timeout``: in an outage the
        leave can wait for a coordinator that is not there."""
        if timeout == float("inf"):
            self._close_all()
            return True
        closer = threading.Thread(target=self._close_all, name="close", daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            log.warning("the consumer did not close within the grace period (outage); exiting")
            return False
        return True

    def _close_all(self) -> None:
        self.source.close()
        if self.link is not None:
            self.link.close()

    def checkpoint(self, timeout: float, wait: bool = False) -> bool:
        """What was produced acknowledged first (dead letters; with repartition, the
        forwarded records), input offsets committed second (``wait``: a synchronous commit).
        Returns False, pausing consumption, while anything is not acknowledged."""
        unacknowledged = self._unacknowledged(timeout)
        if unacknowledged is not None:
            step, what = unacknowledged
            self.telemetry.checkpoint_failures.labels(step).inc()
            self._pause_reason = what
            if not self._paused:
                log.warning("%s: pausing consumption and committing nothing until it does", what)
                self.source.pause()
                self._paused = True
            return False
        if self._paused:
            log.info("produced messages acknowledged; resuming consumption")
            self.source.resume()
            if self.alignment is not None:
                self.alignment.reset()  # the next batch pauses what is still ahead
            self._paused = False
        self.source.commit(wait)
        return True

    def _unacknowledged(self, timeout: float) -> tuple[str, str] | None:
        """(checkpoint step, what is wrong) for the first producer that does not get its
        messages acknowledged within ``timeout``; None when all do."""
        letters = self.dead_letters
        if not letters.flush(timeout):
            return "dead_letters", (
                f"dead-letter topic unavailable ({letters.topic!r}: {letters.last_error}; "
                f"{letters.pending} letters unacknowledged)"
            )
        if self.link is not None and not self.link.flush(timeout):
            return "engine", (
                f"engine topic unavailable ({self.link.topic!r}: {self.link.last_error}; "
                f"forwarded records unacknowledged)"
            )
        return None

    # -- repartition ---------------------------------------------------------------------
    def _repartition(
        self, messages: Sequence[RawMessage], now: float, lags: Mapping[Key, int]
    ) -> None:
        """Stage 1 on this batch (route it, report progress), then a batch of stage 2."""
        assert self.link is not None
        assert self.router is not None
        pipeline = self.pipeline
        if messages:
            with self.telemetry.batch_duration.time():
                decoded = pipeline.decode(messages)
                pipeline.reject(decoded.rejected, self.dead_letters)
                pipeline.processed += len(messages)
                raw = {(m.topic() or "", m.partition() or 0, m.offset() or 0): m for m in messages}
                for key in raw:
                    self._last_read[key[:2]] = now
                routed = self.router.route(
                    decoded.predictions, decoded.labels, raw, self.settings.topics.predictions, now
                )
                pipeline.count(decoded.predictions, decoded.labels)
                self.link.record(self.router.take_changes())
                for partition, message in routed:
                    self.link.send(partition, message)
                pipeline.held_by_router = self.router.holding
            self._store(messages)
        elif self.router.holding:  # held labels whose predictions stopped coming go on
            released = self.router.release(now)
            self.link.record(self.router.take_changes())
            for partition, message in released:
                self.link.send(partition, message)
            pipeline.held_by_router = self.router.holding
        if not self._paused:  # nothing is read while paused: nothing to report
            self._report_progress(now, lags)
        self.link.poll()
        engine = self.link.consume(self.settings.worker.batch_size, 0.0)
        pipeline.process_engine(engine, self.dead_letters, now)
        self.health.rebuilding = pipeline.rebuilding = not self.link.caught_up()

    def _report_progress(self, now: float, lags: Mapping[Key, int]) -> None:
        """Each owned source partition's progress, to every internal partition: the newest
        event time admitted (for labels, never past one held here), and whether it is idle."""
        assert self.link is not None
        assert self.router is not None
        held = self._held()
        earliest = self.router.earliest_held()
        idle_after = self.settings.event_time.idle_seconds
        for tp in self.source.assignment:
            key = (tp.topic, tp.partition)
            newest = self.pipeline.clock.watermarks.get(key)
            if tp.topic == self.settings.topics.labels and tp.partition in earliest:
                newest = min(newest or float("inf"), earliest[tp.partition])
            quiet = now - self._last_read.setdefault(key, now)
            idle = lags.get(key, 1) <= 0 and key not in held and quiet >= idle_after
            self.link.progress(key, newest, idle)

    def _engine_assigned(self, partitions: list[int]) -> None:
        self.pipeline.reset_engine(partitions, len(self._sources) // 2, time.monotonic())
        self.health.rebuilding = self.pipeline.rebuilding = True

    def _engine_revoked(self, partitions: list[int]) -> None:
        # the versions go to their new owner, which rebuilds them: their series leave here
        self.pipeline.reset_engine([], len(self._sources) // 2, time.monotonic())

    def _held(self) -> set[Key]:
        """The partitions paused by this worker (they have data: never idle)."""
        if self._paused:
            return {(tp.topic, tp.partition) for tp in self.source.assignment}
        return set() if self.alignment is None else set(self.alignment.held)

    def _store(self, messages: Sequence[RawMessage]) -> None:
        """Store, per partition, the offset up to which every record has been applied:
        the next after the last one read, or the first still waiting in the event order."""
        for m in messages:
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            if topic is not None and partition is not None and offset is not None:
                key = (topic, partition)
                self._consumed[key] = max(self._consumed.get(key, 0), offset + 1)
        # repartition: stage 1 holds nothing uncommitted (held labels are in its changelog)
        offsets = (
            self.pipeline.order.next_offsets(self._consumed)
            if self.router is None
            else self._consumed
        )
        changed = {k: o for k, o in offsets.items() if self._stored.get(k) != o}
        if changed:
            self.source.store_offsets(changed)
            self._stored.update(changed)

    def _align(self, lags: Mapping[Key, int]) -> None:
        """Pause the partitions that run ahead of the other topic; resume the rest."""
        if self.alignment is None or self._paused or not self.source.assignment:
            return
        partitions = {tp.partition for tp in self.source.assignment}
        pause, resume = self.alignment.update(
            partitions, self.pipeline.clock.latest, lags, time.monotonic()
        )
        if not (pause or resume):
            return
        self.source.resume(resume)
        self.source.pause(pause)
        counts = Counter(topic for topic, _ in self.alignment.held)
        for topic in self.source.topics:
            self.telemetry.paused.labels(topic).set(counts.get(topic, 0))

    def _final_checkpoint(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        committed = self.checkpoint(grace / 2) and self.source.wait_for_commits(
            max(0.1, deadline - time.monotonic())
        )
        waiting = self.pipeline.order.waiting
        if committed:
            log.info(
                "stopped after %d messages; offsets committed (%d more read, still waiting in "
                "the event order, are not: a restart reads them again)",
                self.pipeline.handled,
                waiting,
            )
            return
        log.warning(
            "stopped after %d messages without a final commit (%s; %d dead letter(s) "
            "unacknowledged): a restart re-reads from the last committed offsets %s",
            self.pipeline.handled,
            self.source.commit_error or "no answer from the group coordinator",
            self.dead_letters.pending,
            self.source.uncommitted() or "(unknown: the cluster does not answer)",
        )

    def _report_health(self) -> None:
        t = self.telemetry
        t.dead_letters_pending.set(self.dead_letters.pending)
        t.dead_letters_omitted.inc(self.dead_letters.take_omitted())
        if self._paused:
            self.health.problem = f"{self._pause_reason}: consumption paused, nothing committed"
            return
        stale = time.monotonic() - self.source.last_commit
        limit = max(10.0, 5 * self.settings.worker.commit_interval_seconds)
        if self.source.unreachable is not None and not self.source.probe():
            self.health.problem = (
                f"cannot reach Kafka ({self.source.unreachable}): offsets are not committed; "
                f"resuming by itself when it is back"
            )
        elif self.source.commit_error is not None:
            self.health.problem = f"cannot commit offsets: {self.source.commit_error}"
        elif self.source.commits_in_flight and stale > limit:
            self.health.problem = f"no offset commit has succeeded for {stale:.0f}s"
        else:
            self.health.problem = None

    def _export_lag(self) -> None:
        for (topic, partition), lag in self.source.lag().items():
            self._lag_series.add((topic, str(partition)))
            self.telemetry.lag.labels(topic, str(partition)).set(lag)

    # -- rebalance callbacks (run inside consume) ---------------------------------------
    def _assigned(self, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", [(tp.topic, tp.partition) for tp in partitions])
        owned = [tp.partition for tp in partitions if tp.topic == self.settings.topics.predictions]
        if self.router is not None and self.link is not None:  # stage 1's state, restored
            timeout = self.settings.kafka.connect_timeout_seconds
            for partition, entries in self.link.restore(owned, timeout).items():
                self.router.restore(partition, entries, time.monotonic())
            log.info(
                "restored stage 1's state: %d routes, %d held labels",
                len(self.router.routes),
                self.router.holding,
            )
        now = time.monotonic()
        for tp in partitions:  # quiet from the assignment on, not from a previous ownership
            self._last_read[(tp.topic, tp.partition)] = now
        self.pipeline.quality.assign(owned)
        self.pipeline.order.assign(
            [(tp.topic, tp.partition) for tp in partitions], time.monotonic()
        )
        self._paused = False  # a new assignment starts unpaused
        self._set_assigned(partitions)

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", [(tp.topic, tp.partition) for tp in partitions])
        if not self._stopping:  # at shutdown the final checkpoint already ran
            # the batch before this callback is applied and stored
            self.checkpoint(5.0, wait=True)
        self._drop(partitions)

    def _lost(self, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s (not committing)", [(tp.topic, tp.partition) for tp in partitions])
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        # librdkafka keeps a partition's pause across a rebalance: one paused here (event-time
        # alignment, backpressure) and assigned back would never be fetched again, while the
        # new assignment starts with nothing held. Every partition leaves unpaused.
        self.source.resume((tp.topic, tp.partition) for tp in partitions)
        owned = [tp.partition for tp in partitions if tp.topic == self.settings.topics.predictions]
        self.pipeline.quality.revoke(owned)  # the join state; the engine's stays
        keys = [(tp.topic, tp.partition) for tp in partitions]
        if self.router is not None:
            self.router.revoke({p for _, p in keys})
        dropped = 0 if self.link is not None else self.pipeline.order.revoke(keys)
        if dropped:
            log.info("%d record(s) waiting in the event order left with their partitions", dropped)
        for key in keys:
            self._consumed.pop(key, None)
            self._stored.pop(key, None)
        for tp in partitions:  # retire the lag series of partitions we no longer own
            self.pipeline.clock.forget(tp.topic, tp.partition)
            series = (tp.topic, str(tp.partition))
            if series in self._lag_series:
                self._lag_series.discard(series)
                self.telemetry.lag.remove(*series)
        self._set_assigned([])

    def _set_assigned(self, partitions: list[TopicPartition]) -> None:
        if self.alignment is not None:
            self.alignment.reset()
        counts = Counter(tp.topic for tp in partitions)
        for topic in self.source.topics:
            self.telemetry.assigned.labels(topic).set(counts.get(topic, 0))
            self.telemetry.paused.labels(topic).set(0)
        self.health.assigned = len(partitions)
