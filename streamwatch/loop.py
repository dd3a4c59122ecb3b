"""The one loop: every source (Kafka, the demo's stream, replay's files) through one step.

One :meth:`Loop.step`::

    consume a batch from the source (the partitions not paused)
    decode and admit it; rejections → dead letters (given a producer) + invalid counter
    the event order releases, in (event time, id) order, what no partition can precede
    (a partition with nothing left, or one that has ended, holds nobody back)
    the version cap, the monitor and the quality side apply what it released
    store the offsets up to the first record still waiting
    pause the partitions that run ahead of the other topic in event time (alignment)

The Kafka worker adds checkpoints, health and rebalances around it (:mod:`streamwatch.worker`);
the demo and replay run it until their streams end (:meth:`Loop.run_to_end`). So the three
decode, reject, order and apply alike, and replay's alarms are the live worker's.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from streamwatch.alignment import Alignment
from streamwatch.deadletter import DeadLetters
from streamwatch.pipeline import Outcome, Pipeline
from streamwatch.records import RawMessage
from streamwatch.source import Key, Source


class Loop:
    """Reads ``source`` into ``pipeline``; reads the topics in step when ``align_seconds``
    is set (see :mod:`streamwatch.alignment`)."""

    def __init__(
        self,
        source: Source,
        pipeline: Pipeline,
        dead_letters: DeadLetters | None,
        align_seconds: float | None,
    ) -> None:
        self.source = source
        self.pipeline = pipeline
        self.dead_letters = dead_letters
        predictions, labels = source.topics
        self.alignment = (
            None if align_seconds is None else Alignment(predictions, labels, align_seconds)
        )
        self.paused_all = False  # backpressure (the worker's): every partition is held
        # per partition: the next offset after the last one read, and the offset stored
        self._consumed: dict[Key, int] = {}
        self._stored: dict[Key, int] = {}

    def step(self, max_messages: int, timeout: float) -> Outcome | None:
        """Read a batch and apply what the event order releases; None when there was
        nothing to do (nothing read, nothing waiting)."""
        source, pipeline = self.source, self.pipeline
        messages = source.consume(max_messages, timeout)
        now = time.monotonic()
        lags = source.lag()
        for key in source.ended():  # nothing more can come: it holds nobody back
            pipeline.order.progress(key, None, True, now)
        outcome = None
        if messages or pipeline.order.waiting or pipeline.quality.holding:
            with pipeline.telemetry.batch_duration.time():
                outcome = pipeline.process(
                    messages, self.dead_letters, now, self.order_lags(lags), self.held()
                )
            self.store(messages)
        self.align(lags, now)
        return outcome

    def order_lags(self, lags: Mapping[Key, int]) -> dict[Key, int]:
        """The lags for the event order: a partition not read yet counts as behind (never
        idle), so that a slow first fetch does not let the others run ahead of it."""
        return dict.fromkeys(self.source.partitions, 1) | dict(lags)

    def run_to_end(self, max_messages: int, each: Callable[[Outcome], None]) -> None:
        """Step until every partition has ended, then apply what still waits (a finite
        source); ``each`` gets every batch's outcome."""
        while True:
            outcome = self.step(max_messages, 0.0)
            if outcome is not None:
                each(outcome)
            if len(self.source.ended()) == len(self.source.partitions):
                break
        each(self.pipeline.drain())

    def held(self) -> set[Key]:
        """The partitions paused here (they have data: never idle)."""
        if self.paused_all:
            return set(self.source.partitions)
        return set() if self.alignment is None else set(self.alignment.held)

    def store(self, messages: Sequence[RawMessage]) -> None:
        """Store, per partition, the offset up to which every record has been applied:
        the next after the last one read, or the first still waiting in the event order."""
        self._read(messages)
        self._store_consumed(self.pipeline.order.next_offsets(self._consumed))

    def store_read(self, messages: Sequence[RawMessage]) -> None:
        """Store the offsets past every message read (repartition's stage 1, which keeps
        nothing uncommitted: its held labels are in its changelog)."""
        self._read(messages)
        self._store_consumed(self._consumed)

    def _read(self, messages: Sequence[RawMessage]) -> None:
        """Per partition, the next offset after the last message read."""
        for m in messages:
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            if topic is not None and partition is not None and offset is not None:
                key = (topic, partition)
                self._consumed[key] = max(self._consumed.get(key, 0), offset + 1)

    def _store_consumed(self, offsets: Mapping[Key, int]) -> None:
        changed = {k: o for k, o in offsets.items() if self._stored.get(k) != o}
        if changed:
            self.source.store_offsets(changed)
            self._stored.update(changed)

    def align(self, lags: Mapping[Key, int], now: float) -> None:
        """Pause the partitions that run ahead of the other topic; resume the rest."""
        partitions = self.source.partitions
        if self.alignment is None or self.paused_all or not partitions:
            return
        pause, resume = self.alignment.update(
            {p for _, p in partitions}, self.pipeline.clock.latest, lags, now
        )
        if not (pause or resume):
            return
        self.source.resume(resume)
        self.source.pause(pause)
        counts = Counter(topic for topic, _ in self.alignment.held)
        for topic in self.source.topics:
            self.pipeline.telemetry.paused.labels(topic).set(counts.get(topic, 0))

    def reset_alignment(self) -> None:
        """A new assignment, or a resume after backpressure: nothing held."""
        if self.alignment is not None:
            self.alignment.reset()

    @property
    def stored(self) -> dict[Key, int]:
        """Per partition, the offset stored last (what the next commit sends)."""
        return dict(self._stored)

    def forget(self, keys: Iterable[Key]) -> None:
        """Partitions that left (revoked, lost): their offsets are no longer ours."""
        for key in keys:
            self._consumed.pop(key, None)
            self._stored.pop(key, None)
