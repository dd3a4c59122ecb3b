"""Join: late labels to their predictions, by prediction id. The only cross-topic buffer.

Per predictions partition (labels are co-partitioned: same key, same partition count, the
``range`` assignor), predictions wait in a :class:`PendingPredictions` store until their
label arrives, for at most ``labels.ttl_seconds`` of label event time. A label that arrives
before its prediction waits (:class:`EarlyLabels`) ``labels.early_hold_seconds`` of
prediction event time; at most ``labels.early_hold_max_labels`` wait per worker (the oldest
are released first), and a partition whose predictions stop for
``labels.early_hold_idle_seconds`` of wall-clock time releases the labels it holds.

Rules:

* a prediction is joined to the **first** label that arrives for it; later labels for the
  same id are duplicates: counted and ignored (so replays and retries never double-count);
* a second prediction with an id already pending replaces nothing: it is counted as a
  duplicate prediction and the first one keeps waiting;
* a label whose prediction never arrives (or expired) is counted as unknown;
* a prediction without a label after the TTL is counted as expired unlabelled.

The store keeps one dict entry per pending id (a 64-bit hash of the id -> its slot: atomic
keys and values, so the cyclic garbage collector never scans it) and the rest in flat
numpy arrays.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.records import Label
from streamwatch.statistics import FloatArray, IntArray

_KEY_MASK = (1 << 60) - 1  # 60 bits: a Python int of 32 bytes, not 36


def id_hash(prediction_id: str) -> int:
    """A stable 60-bit key for a prediction id (BLAKE2b): the same in every process, so a
    restored store matches; among n pending ids a collision has probability about
    n^2 / 2^61 (4 * 10^-7 at a million)."""
    digest = hashlib.blake2b(prediction_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _KEY_MASK


class PendingPredictions:
    """Predictions waiting for labels: ``id hash -> slot`` in a dict (int keys and values:
    no object the garbage collector tracks), everything else in per-slot numpy columns; free
    slots on a numpy stack. The schema of the columns is given at construction."""

    def __init__(
        self, columns: dict[str, type], capacity: int = 1024, min_growth: int = 1024
    ) -> None:
        self.capacity = capacity
        self.min_growth = min_growth
        self.slots: dict[int, int] = {}
        self.timestamps = np.full(capacity, np.inf)
        self.hashes = np.zeros(capacity, dtype=np.uint64)
        self.columns: dict[str, npt.NDArray[Any]] = {
            name: np.zeros(capacity, dtype=dtype) for name, dtype in columns.items()
        }
        self._free = np.arange(capacity - 1, -1, -1, dtype=np.int32)
        self._top = capacity  # free slots are self._free[:self._top]

    def __len__(self) -> int:
        return len(self.slots)

    def _grow(self, needed: int) -> None:
        old = self.capacity
        while self.capacity - len(self.slots) < needed:
            self.capacity += max(self.capacity // 4, self.min_growth)
        extra = self.capacity - old
        self.timestamps = np.concatenate([self.timestamps, np.full(extra, np.inf)])
        self.hashes = np.concatenate([self.hashes, np.zeros(extra, dtype=np.uint64)])
        for name, column in self.columns.items():
            self.columns[name] = np.concatenate([column, np.zeros(extra, dtype=column.dtype)])
        free = np.concatenate(
            [np.arange(self.capacity - 1, old - 1, -1, dtype=np.int32), self._free[: self._top]]
        )
        self._free = np.concatenate([free, np.zeros(self.capacity - len(free), dtype=np.int32)])
        self._top = len(free)

    def add_many(
        self, keys: list[int], timestamps: FloatArray, columns: dict[str, npt.NDArray[Any]]
    ) -> npt.NDArray[np.bool_]:
        """Store a batch; the mask says which were stored (a key already waiting, or twice
        in the batch, is not)."""
        added = np.zeros(len(keys), dtype=bool)
        if self._top < len(keys):
            self._grow(len(keys))
        start = self._top
        slots = self._free[start - len(keys) : start][::-1]
        used = 0
        table = self.slots
        chosen = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):  # one dict operation per prediction
            if key in table:
                continue
            slot = int(slots[used])
            table[key] = slot
            chosen[used] = slot
            added[i] = True
            used += 1
        self._top = start - used
        taken = chosen[:used]
        self.timestamps[taken] = timestamps[added]
        self.hashes[taken] = np.asarray(keys, dtype=np.uint64)[added]
        for name, values in columns.items():
            self.columns[name][taken] = values[added]
        return added

    def take_many(self, keys: list[int]) -> tuple[npt.NDArray[np.bool_], IntArray, FloatArray]:
        """Remove the waiting predictions of these keys: which were found, their slots
        (whose columns stay valid until the next add) and their event times."""
        pop = self.slots.pop
        slots = np.array([pop(key, -1) for key in keys], dtype=np.int64)
        found = slots >= 0
        slots = slots[found]
        timestamps = self.timestamps[slots].copy()
        self._release(slots)
        return found, slots, timestamps

    def _release(self, slots: IntArray) -> None:
        self.timestamps[slots] = np.inf
        self._free[self._top : self._top + len(slots)] = slots
        self._top += len(slots)

    def expire(self, before: float) -> IntArray:
        """Drop every prediction older than ``before``; return their slots (valid until the
        next add)."""
        return self.remove(np.flatnonzero(self.timestamps < before))

    def remove(self, old: IntArray) -> IntArray:
        """Drop the predictions in these (occupied) slots; return them (valid until the next
        add)."""
        for key in self.hashes[old].tolist():
            del self.slots[key]
        self._release(old)
        return old


class EarlyLabels:
    """Labels that arrived before their prediction, by id hash, indexed by label event time.

    Expiry pops a heap ordered by label time instead of scanning every held label, so a
    batch costs O(log n) per label that comes or goes, not O(held). A label matched (popped
    by its prediction) leaves a stale heap entry, skipped when reached; the heap is rebuilt
    when stale entries outnumber live ones."""

    def __init__(self) -> None:
        # id hash -> (label, time, partition, offset): the id itself is not kept (its
        # prediction brings it), which saves the string's bytes on every held label
        self.labels: dict[int, tuple[float | str, float, int, int]] = {}
        self._heap: list[tuple[float, int]] = []  # (label time, id hash)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, key: int) -> bool:
        return key in self.labels

    def hold(self, key: int, label: Label) -> None:
        self.labels[key] = (label.label, label.timestamp, label.partition, label.offset)
        heapq.heappush(self._heap, (label.timestamp, key))

    def pop(self, key: int, prediction_id: str) -> Label | None:
        """The label held for ``key`` (the hash of ``prediction_id``), taken out."""
        held = self.labels.pop(key, None)
        return None if held is None else Label(prediction_id, *held)

    def release_before(self, limit: float) -> int:
        """Release the labels with event time before ``limit``; return how many."""
        released = self._release(limit, len(self.labels))
        self._compact()
        return released

    def release_oldest(self, n: int) -> int:
        """Release up to ``n`` labels, the oldest by event time first (over budget)."""
        return self._release(float("inf"), n)

    def _release(self, limit: float, n: int) -> int:
        """Pop the heap while its oldest entry is before ``limit`` and fewer than ``n`` live
        labels were released; stale entries (labels already matched) are skipped."""
        released = 0
        heap, labels = self._heap, self.labels
        while heap and heap[0][0] < limit and released < n:
            t, key = heapq.heappop(heap)
            held = labels.get(key)
            if held is not None and held[1] == t:
                del labels[key]
                released += 1
        return released

    def release_all(self) -> int:
        released = len(self.labels)
        self.labels.clear()
        self._heap.clear()
        return released

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self.labels) + 1024:
            self._heap = [(held[1], k) for k, held in self.labels.items()]
            heapq.heapify(self._heap)
