"""Windows: additive count tables over the last N events or the last T seconds.

A :class:`Table` is everything the windowed statistics need, as counts and sums that can be
added and subtracted: numeric bin counts, sums for the mean, out-of-range counts,
categorical counts and type errors. A micro-batch becomes one table (or one per time bucket);
a window adds the new table and subtracts the tables that expired, so no event is ever
looked at twice and no per-event state is kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from streamwatch.statistics import FloatArray, IntArray


@dataclass
class Table:
    events: int
    bins: IntArray  # (numeric signals, bin width); the last column counts missing values
    sums: FloatArray  # (numeric signals,) sum of present values
    present: IntArray  # (numeric signals,) count of present values
    out_of_range: IntArray  # (numeric signals,) outside the reference's [min, max]
    categories: IntArray  # every categorical signal's columns, concatenated
    type_errors: IntArray  # (features,) events rejected for this feature's type

    @classmethod
    def zeros(cls, numeric: int, width: int, categories: int, features: int) -> Table:
        return cls(
            0,
            np.zeros((numeric, width), np.int64),
            np.zeros(numeric),
            np.zeros(numeric, np.int64),
            np.zeros(numeric, np.int64),
            np.zeros(categories, np.int64),
            np.zeros(features, np.int64),
        )

    def __add__(self, other: Table) -> Table:
        return Table(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: Table) -> Table:
        return Table(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


class CountWindow:
    """The last ``size`` events, in chunks of ``size / 16`` events: chunk k holds events
    ``[k * chunk, (k + 1) * chunk)`` of the stream, whatever the batches (:meth:`add_rows`
    cuts them on those boundaries). The oldest chunk leaves once the rest holds ``size``
    events, so a filled window holds from ``size`` to ``size + size / 16 - 1`` events, the
    same ones for the same stream however it was batched, in at most 17 tables."""

    CHUNKS = 16

    def __init__(self, size: int, empty: Table) -> None:
        self.size = size
        self.chunk = max(1, size // self.CHUNKS)
        self.total = empty
        self._tables: deque[Table] = deque()

    def pieces(self, rows: int) -> list[slice]:
        """Where the next ``rows`` events are cut: on chunk boundaries, the first piece
        filling the newest chunk. Add their tables in this order (:meth:`add`)."""
        out = []
        newest = self._tables[-1].events if self._tables else self.chunk
        start, room = 0, self.chunk - newest if newest < self.chunk else self.chunk
        while start < rows:
            end = min(rows, start + room)
            out.append(slice(start, end))
            start, room = end, self.chunk
        return out

    def add_rows(self, rows: int, table_of: Callable[[slice], Table]) -> None:
        """Add ``rows`` events, tabled by ``table_of(slice)`` in :meth:`pieces`."""
        for part in self.pieces(rows):
            self.add(table_of(part))

    def add(self, table: Table) -> None:
        """Add one table (of at most a chunk of events, for the bound above)."""
        if self._tables and self._tables[-1].events + table.events <= self.chunk:
            self._tables[-1] = self._tables[-1] + table
        else:
            self._tables.append(table)
        self.total = self.total + table
        while self._tables and self.total.events - self._tables[0].events >= self.size:
            self.total = self.total - self._tables.popleft()

    @property
    def fill(self) -> float:
        return min(1.0, self.total.events / self.size)


class TimeWindow:
    """The last ``seconds`` of event time, in ``buckets`` buckets; the window ends at the
    newest event time seen (the watermark). Events older than the window are not added."""

    def __init__(self, seconds: float, empty: Table, buckets: int = 60) -> None:
        self.seconds = seconds
        self.bucket_seconds = seconds / buckets
        self.total = empty
        self.watermark = float("-inf")
        self.earliest = float("inf")
        self._buckets: dict[int, Table] = {}

    def bucket_of(self, timestamps: FloatArray) -> IntArray:
        return np.floor(timestamps / self.bucket_seconds).astype(np.int64)

    def add(self, bucket: int, table: Table, newest: float) -> None:
        self.watermark = max(self.watermark, newest)
        oldest = self._oldest_bucket()
        if bucket >= oldest:
            self._buckets[bucket] = (
                self._buckets[bucket] + table if bucket in self._buckets else table
            )
            self.total = self.total + table
        # every event offered counts for the span covered, added or too old: the same
        # stream gives the same fill however it was batched
        self.earliest = min(self.earliest, bucket * self.bucket_seconds)
        for expired in [b for b in self._buckets if b < oldest]:
            self.total = self.total - self._buckets.pop(expired)

    def _oldest_bucket(self) -> int:
        return int(np.floor((self.watermark - self.seconds) / self.bucket_seconds)) + 1

    @property
    def fill(self) -> float:
        """How much of the window's span the stream has covered so far."""
        if not self._buckets:
            return 0.0
        return float(min(1.0, (self.watermark - self.earliest) / self.seconds))


class TumblingWindow:
    """Back-to-back spans of event time, ``[k * seconds, (k + 1) * seconds)``.

    ``closed`` is the newest span the watermark has passed; ``total`` is its table. A span
    keeps taking additions (late labels) until ``keep`` newer spans have closed after it;
    later additions to it are dropped here (the caller's cumulative totals still count them).
    """

    def __init__(self, seconds: float, empty: Table, keep: int = 2) -> None:
        self.seconds = seconds
        self.keep = keep
        self.empty = empty
        self.watermark = float("-inf")
        self._spans: dict[int, Table] = {}

    def bucket_of(self, timestamps: FloatArray) -> IntArray:
        return np.floor(timestamps / self.seconds).astype(np.int64)

    def add(self, bucket: int, table: Table, newest: float) -> None:
        self.watermark = max(self.watermark, newest)
        oldest = self.closed - self.keep
        if bucket >= oldest:
            self._spans[bucket] = self._spans[bucket] + table if bucket in self._spans else table
        for expired in [b for b in self._spans if b < oldest]:
            del self._spans[expired]

    @property
    def closed(self) -> int:
        """The newest span that ended at or before the watermark."""
        if self.watermark == float("-inf"):
            return -(2**62)
        return int(np.floor(self.watermark / self.seconds)) - 1

    def span(self, bucket: int) -> Table:
        return self._spans.get(bucket, self.empty)

    @property
    def total(self) -> Table:
        return self.span(self.closed)
