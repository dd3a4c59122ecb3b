"""Alignment: read the predictions and labels topics in step by event time.

A worker catching up on a backlog would otherwise read whichever topic is cheaper to
fetch (labels are small) far ahead of the other: labels flood the early-label hold before
their predictions arrive, or predictions pile up in the pending store. As Kafka Streams does
with ``max.task.idle.ms``, a topic partition whose event-time watermark is more than
``event_time.align_seconds`` ahead of its co-partition on the other topic is paused, while
that co-partition still has messages to read. It resumes when the other has caught up with
it (not merely to within ``align_seconds``: each pause costs a refetch, so a cycle should
cover a span of event time), or has nothing left to read (an idle or empty partition never
holds the other back).

    labels p:      ──────────────────●  (watermark 12:40)      paused: ahead by > align
    predictions p: ─────────●            (watermark 12:00, lag > 0)

Event time here is the last record read on each partition (arrival order), not the highest:
one record stamped an hour ahead (admission lets up to ``max_future_seconds`` through) moves
it only until the next record. And no partition is held longer than ``MAX_HOLD_SECONDS`` of
wall-clock time at a stretch: whatever the data, it reads at least one more batch then.

Pure logic: the worker passes the event times (from admission), the lags and the clock, and
pauses and resumes what :meth:`Alignment.update` returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

TopicPartitionKey = tuple[str, int]
MAX_HOLD_SECONDS = 30.0  # wall clock: a held partition then reads at least one batch


class Alignment:
    def __init__(self, predictions: str, labels: str, align_seconds: float) -> None:
        self.pairs = ((predictions, labels), (labels, predictions))
        self.align_seconds = align_seconds
        self.held: dict[TopicPartitionKey, float] = {}  # held partitions, since when

    def update(
        self,
        partitions: Iterable[int],
        event_times: Mapping[TopicPartitionKey, float],
        lags: Mapping[TopicPartitionKey, int],
        now: float,
    ) -> tuple[set[TopicPartitionKey], set[TopicPartitionKey]]:
        """The partitions to pause and to resume now. One held for ``MAX_HOLD_SECONDS`` is
        let go for a batch."""
        ahead = self.ahead(partitions, event_times, lags, self.held)
        expired = {k for k in ahead & self.held.keys() if now - self.held[k] >= MAX_HOLD_SECONDS}
        ahead -= expired
        pause = ahead - self.held.keys()
        resume = set(self.held) - ahead
        self.held = {k: self.held.get(k, now) for k in ahead}
        return pause, resume

    def reset(self) -> None:
        """A new assignment starts with nothing held."""
        self.held = {}

    def ahead(
        self,
        partitions: Iterable[int],
        watermarks: Mapping[TopicPartitionKey, float],
        lags: Mapping[TopicPartitionKey, int],
        held: Iterable[TopicPartitionKey] = (),
    ) -> set[TopicPartitionKey]:
        """The topic partitions to pause: ahead of their co-partition by more than
        ``align_seconds`` of event time (those ``held`` already: ahead at all) while it has
        messages left. An unknown lag counts as none: never stall on a missing figure."""
        held = set(held)
        paused = set()
        for p in partitions:
            for topic, other in self.pairs:
                mine, theirs = watermarks.get((topic, p)), watermarks.get((other, p))
                if mine is None or lags.get((other, p), 0) <= 0:
                    continue
                lead = 0.0 if (topic, p) in held else self.align_seconds
                if theirs is None or mine > theirs + lead:
                    paused.add((topic, p))
        return paused
