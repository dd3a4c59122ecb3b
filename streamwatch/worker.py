"""Worker: a consumer-group member running the one loop on Kafka, with checkpoints and rebalances.

Each iteration is a :meth:`streamwatch.loop.Loop.step` on the Kafka source (consume with a
short timeout, so a stop request is seen within a second; decode, admit, order, apply; store
the offsets; read the topics in step), then a checkpoint when one is due. With
``engine.mode: repartition`` it is stage 1 and stage 2 of :mod:`streamwatch.repartition`.

A checkpoint, every ``worker.commit_interval_seconds``, on revoke and at shutdown, runs in
this order, and a later step never runs if an earlier one failed:

    1. flush what was produced, within one time budget: the dead letters (every rejected
       message acknowledged); with repartition, the forwarded records and stage 1's
       changelog
    2. commit the stored offsets (asynchronously: results arrive in the next polls; on
       revoke, the revoked partitions' offsets, within ``REVOKE_BUDGET_SECONDS``)

If step 1 fails (the dead-letter topic is unreachable), nothing is committed and
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
from collections.abc import Mapping, Sequence

from confluent_kafka import KafkaException, TopicPartition

from streamwatch.config import Settings
from streamwatch.deadletter import DeadLetters
from streamwatch.errors import ConfigError, ConfigProblem, KafkaSetupError
from streamwatch.exporter import Health
from streamwatch.loop import Loop
from streamwatch.pipeline import Pipeline
from streamwatch.records import RawMessage
from streamwatch.repartition import EngineLink, Router
from streamwatch.source import KafkaSource, Key

log = logging.getLogger(__name__)

#: The revoke callback's budget for flushing what was produced, well inside the group's
#: rebalance timeout (``max.poll.interval.ms``, 300 s by default).
REVOKE_BUDGET_SECONDS = 5.0


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
            self.source = KafkaSource(settings, self._assigned, self._revoked, self._lost)
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
        self.loop = Loop(
            self.source, pipeline, self.dead_letters, settings.event_time.align_seconds
        )
        self._pause_reason = ""  # backpressure: a topic we produce to does not acknowledge
        self._stopping = False
        # at a stop, apply the records still waiting in the event order (the demo's finite
        # stream); `run` leaves them uncommitted for the next start to read
        self.drain_on_stop = False
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
                if self.link is None:
                    self.loop.step(w.batch_size, w.poll_timeout_seconds)
                    self.health.last_poll = time.monotonic()
                else:
                    messages = self.source.consume(w.batch_size, w.poll_timeout_seconds)
                    now = self.health.last_poll = time.monotonic()
                    lags = self.source.lag()
                    self._repartition(messages, now, self.loop.order_lags(lags))
                    self.loop.align(lags, now)
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

    def checkpoint(self, timeout: float, offsets: Mapping[Key, int] | None = None) -> bool:
        """What was produced acknowledged first (dead letters; with repartition, the
        forwarded records), within ``timeout`` in all; input offsets committed second
        (asynchronously; the stored offsets, or ``offsets``). Returns False, pausing
        consumption, while anything is not acknowledged."""
        unacknowledged = self._unacknowledged(timeout)
        if unacknowledged is not None:
            step, what = unacknowledged
            self.telemetry.checkpoint_failures.labels(step).inc()
            self._pause_reason = what
            if not self.loop.paused_all:
                log.warning("%s: pausing consumption and committing nothing until it does", what)
                self.source.pause()
                self.loop.paused_all = True
            return False
        if self.loop.paused_all:
            log.info("produced messages acknowledged; resuming consumption")
            self.source.resume()
            self.loop.reset_alignment()  # the next batch pauses what is still ahead
            self.loop.paused_all = False
        self.source.commit(offsets)
        return True

    def _unacknowledged(self, timeout: float) -> tuple[str, str] | None:
        """(checkpoint step, what is wrong) for the first producer that does not get its
        messages acknowledged within ``timeout``; None when all do."""
        deadline = time.monotonic() + timeout  # one budget for every producer
        letters = self.dead_letters
        if not letters.flush(timeout):
            return "dead_letters", (
                f"dead-letter topic unavailable ({letters.topic!r}: {letters.last_error}; "
                f"{letters.pending} letters unacknowledged)"
            )
        if self.link is not None and not self.link.flush(max(0.0, deadline - time.monotonic())):
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
            self.loop.store_read(messages)
        elif self.router.holding:  # held labels whose predictions stopped coming go on
            released = self.router.release(now)
            self.link.record(self.router.take_changes())
            for partition, message in released:
                self.link.send(partition, message)
            pipeline.held_by_router = self.router.holding
        if not self.loop.paused_all:  # nothing is read while paused: nothing to report
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
        held = self.loop.held()
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
        if self.loop.paused_all:
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
        self.loop.paused_all = False  # a new assignment starts unpaused
        self._set_assigned(partitions)

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", [(tp.topic, tp.partition) for tp in partitions])
        if not self._stopping:  # at shutdown (or after a failure) no checkpoint runs here
            # The batch before this callback is applied and stored. One time budget for the
            # callback: the flush waits at most REVOKE_BUDGET_SECONDS, and the commit of the
            # revoked partitions' offsets is asynchronous (librdkafka holds the rebalance
            # until it is answered; see KafkaSource.commit).
            keys = {(tp.topic, tp.partition) for tp in partitions}
            stored = {k: o for k, o in self.loop.stored.items() if k in keys}
            self.checkpoint(REVOKE_BUDGET_SECONDS, stored)
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
        self.loop.forget(keys)
        for tp in partitions:  # retire the lag series of partitions we no longer own
            self.pipeline.clock.forget(tp.topic, tp.partition)
            series = (tp.topic, str(tp.partition))
            if series in self._lag_series:
                self._lag_series.discard(series)
                self.telemetry.lag.remove(*series)
        self._set_assigned([])

    def _set_assigned(self, partitions: list[TopicPartition]) -> None:
        self.loop.reset_alignment()
        counts = Counter(tp.topic for tp in partitions)
        for topic in self.source.topics:
            self.telemetry.assigned.labels(topic).set(counts.get(topic, 0))
            self.telemetry.paused.labels(topic).set(0)
        self.health.assigned = len(partitions)
