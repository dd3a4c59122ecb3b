"""Event order: admitted records reach the engine in one order, whatever the partitioning.

The engine's state is kept per model version and slice, shared by every partition a worker
owns, and much of it is sequential: the drift detectors, the concept detectors, the tracked
slice values and versions, the count windows. Fed batch by batch in arrival order, they
would see another sequence for every partition count. So admitted records wait here, and
leave sorted by ``(event time, prediction id)`` once no owned partition can still send an
earlier one (a watermark, as in Flink and Kafka Streams)::

    threshold(predictions) = min over owned, non-idle predictions partitions of
                             (newest event time read - event_time.reorder_seconds)
    threshold(labels)      = the same over the labels partitions, and never above the
                             predictions' threshold: a label then finds its prediction
                             (stamped before it) already in the join's store

A record leaves when its event time is below its topic's threshold. A partition is *idle*
when it has nothing left to read, is not paused, and has sent nothing for
``event_time.idle_seconds`` of wall clock (in stage 2 of repartition: when the stage that reads
it reports it idle, as its reports can come late); an idle partition holds nobody back. A partition
assigned but not heard from yet holds the others back until it is idle, so that a backlog's
first fetch (one partition) does not run ahead of the rest.

A record older than what already left (more out of order in its partition than
``reorder_seconds``, or from a partition that was idle) is not dropped: it leaves with the
next release and is counted as ``late``. More than ``max_waiting`` records waiting (a stalled
partition) forces the oldest out, counted as ``forced``. Either breaks the one order for
those records only; the counts say how many.

Offsets: :meth:`EventOrder.next_offsets` says how far each partition may be committed, never
past a record still waiting, so a restart re-reads what was never applied. A revoked
partition's waiting records are dropped unapplied, for its next owner to read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from streamwatch.records import Label, Prediction

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (topic, partition)
Record = Prediction | Label


def order_key(record: Record) -> tuple[float, str]:
    """The one order: event time, then prediction id (content, not partition or offset)."""
    return (record.timestamp, record.prediction_id)


@dataclass
class _Partition:
    waiting: list[Record] = field(default_factory=list)
    newest: float | None = None  # the newest event time read
    heard: float = 0.0  # wall clock of the last record read (or of the assignment)
    idle: bool = False  # reported idle by the stage that reads it (repartition)


class EventOrder:
    """Holds admitted records and releases them in :func:`order_key` order."""

    def __init__(
        self,
        predictions_topic: str,
        labels_topic: str,
        reorder_seconds: float,
        idle_seconds: float,
        max_waiting: int,
        newest_from_records: bool = True,
    ) -> None:
        self.topics = (predictions_topic, labels_topic)
        # False: a partition's progress comes from progress() only (stage 2 of repartition,
        # where stage 1 reports it: it may hold labels back that records would pass)
        self.newest_from_records = newest_from_records
        self.reorder_seconds = reorder_seconds
        self.idle_seconds = idle_seconds
        self.max_waiting = max_waiting
        self.partitions: dict[Key, _Partition] = {}
        self.released: dict[str, float] = {}  # per topic: the highest threshold so far
        self.late: dict[str, int] = dict.fromkeys(self.topics, 0)
        self.forced: dict[str, int] = dict.fromkeys(self.topics, 0)
        self.waiting = 0
        self.dropped = 0  # records left unapplied with revoked partitions, since the start

    # -- ownership ----------------------------------------------------------------------
    def assign(self, keys: Iterable[Key], now: float) -> None:
        """Partitions to wait for (until they are heard from, or idle)."""
        for key in keys:
            self.partitions.setdefault(key, _Partition(heard=now))

    def revoke(self, keys: Iterable[Key]) -> int:
        """Drop the partitions and their waiting records (unapplied, uncommitted: the next
        owner reads them); return how many were dropped."""
        dropped = 0
        for key in keys:
            state = self.partitions.pop(key, None)
            if state is not None:
                dropped += len(state.waiting)
        self.waiting -= dropped
        self.dropped += dropped
        return dropped

    # -- the flow -----------------------------------------------------------------------
    def add(self, predictions: list[Prediction], labels: list[Label], now: float) -> None:
        """Records admitted from one batch, in arrival order."""
        self._add(self.topics[0], predictions, now)
        self._add(self.topics[1], labels, now)

    def _add(self, topic: str, records: Sequence[Record], now: float) -> None:
        for r in records:
            key = (topic, r.partition)
            state = self.partitions.get(key)
            if state is None:
                state = self.partitions[key] = _Partition()
            state.waiting.append(r)
            state.idle = False  # a partition that sends is not idle
            if self.newest_from_records:
                if state.newest is None or r.timestamp > state.newest:
                    state.newest = r.timestamp
                state.heard = now
        self.waiting += len(records)

    def progress(self, key: Key, newest: float | None, idle: bool, now: float) -> None:
        """A partition's progress, reported by the stage that reads it (repartition): the
        newest event time it will not send anything older than (by ``reorder_seconds``),
        and whether it is idle."""
        state = self.partitions.get(key)
        if state is None:
            state = self.partitions[key] = _Partition()
        if newest is not None and (state.newest is None or newest > state.newest):
            state.newest = newest
        state.idle = idle
        state.heard = now

    def release(
        self,
        now: float,
        lags: Mapping[Key, int] | None = None,
        paused: Iterable[Key] = (),
    ) -> tuple[list[Prediction], list[Label]]:
        """The records no owned partition can precede any more, in order. ``lags``: the
        messages left to read per partition (unknown counts as none); ``paused``: held by
        the worker (never idle: they have data)."""
        lags = lags or {}
        held = set(paused)
        predictions_topic, labels_topic = self.topics
        thresholds: dict[str, float] = {}
        for topic in self.topics:
            bound = float("inf")
            for key, state in self.partitions.items():
                if key[0] != topic:
                    continue
                # stage 2 of repartition: idle only as reported (a report can come late)
                idle = state.idle or (
                    self.newest_from_records
                    and lags.get(key, 0) <= 0
                    and key not in held
                    and now - state.heard >= self.idle_seconds
                )
                if idle:
                    continue
                newest = float("-inf") if state.newest is None else state.newest
                bound = min(bound, newest - self.reorder_seconds)
            thresholds[topic] = bound
        thresholds[labels_topic] = min(thresholds[labels_topic], thresholds[predictions_topic])
        forced = self._forced_threshold()
        predictions = self._take(predictions_topic, thresholds[predictions_topic], forced)
        labels = self._take(labels_topic, thresholds[labels_topic], forced)
        return predictions, labels  # type: ignore[return-value]

    def holding_back(self) -> list[tuple[Key, float | None]]:
        """Per topic, the partitions (not idle) with the oldest progress, which bound its
        threshold, each with the newest event time read: what an operator checks when the
        order does not move."""
        out: list[tuple[Key, float | None]] = []
        for topic in self.topics:
            bound = {
                key: state.newest
                for key, state in self.partitions.items()
                if key[0] == topic and not state.idle
            }
            if bound:  # nothing read yet (None) holds back most
                low = min(bound.values(), key=lambda t: float("-inf") if t is None else t)
                out += [(key, newest) for key, newest in bound.items() if newest == low]
        return out

    def flush(self) -> tuple[list[Prediction], list[Label]]:
        """Everything waiting, in order (the end of a finite stream: demo, replay)."""
        inf = float("inf")
        predictions_topic, labels_topic = self.topics
        predictions = self._take(predictions_topic, inf, None)
        labels = self._take(labels_topic, inf, None)
        return predictions, labels  # type: ignore[return-value]

    def next_offsets(self, consumed: Mapping[Key, int]) -> dict[Key, int]:
        """Per partition, the offset a commit may go up to: the first record still waiting,
        else ``consumed`` (the next offset after the last one read)."""
        out = dict(consumed)
        for key, state in self.partitions.items():
            if state.waiting and key in out:
                first = min(r.offset for r in state.waiting if r.offset >= 0)
                out[key] = min(out[key], first)
        return out

    # -- inside -------------------------------------------------------------------------
    def _forced_threshold(self) -> tuple[float, str] | None:
        """Over ``max_waiting``: the order key below which the oldest half must go."""
        if self.waiting <= self.max_waiting:
            return None
        keys = sorted(order_key(r) for s in self.partitions.values() for r in s.waiting)
        return keys[self.waiting - self.max_waiting // 2]

    def _take(self, topic: str, threshold: float, forced: tuple[float, str] | None) -> list[Record]:
        out: list[Record] = []
        already = self.released.get(topic, float("-inf"))
        late = 0
        forced_n = 0
        for key, state in self.partitions.items():
            if key[0] != topic or not state.waiting:
                continue
            keep: list[Record] = []
            for r in state.waiting:
                if r.timestamp < threshold:
                    out.append(r)
                    if r.timestamp < already:
                        late += 1
                        log.debug(
                            "out of order: %s partition %d at %.3f, after %.3f had left",
                            topic,
                            r.partition,
                            r.timestamp,
                            already,
                        )
                elif forced is not None and order_key(r) < forced:
                    out.append(r)
                    forced_n += 1
                else:
                    keep.append(r)
            state.waiting = keep
        if forced is not None:
            threshold = max(threshold, forced[0]) if threshold != float("inf") else threshold
        if threshold != float("inf") and threshold > already:
            self.released[topic] = threshold
        self.late[topic] += late
        self.forced[topic] += forced_n
        self.waiting -= len(out)
        out.sort(key=order_key)
        return out
