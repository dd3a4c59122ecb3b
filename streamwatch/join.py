"""Join: late labels to their predictions, by prediction id. The only cross-topic buffer.

Per predictions partition (labels are co-partitioned: same key, same partition count, the
``range`` assignor), predictions wait in a :class:`PendingPredictions` store until their
label arrives, for at most ``labels.ttl_seconds`` of label event time. A label that arrives
before its prediction waits ``labels.early_hold_seconds`` of prediction event time.

Rules:

* a prediction is joined to the **first** label that arrives for it; later labels for the
  same id are duplicates: counted and ignored (so replays and retries never double-count);
* a second prediction with an id already pending replaces nothing: it is counted as a
  duplicate prediction and the first one keeps waiting;
* a label whose prediction never arrives (or expired) is counted as unknown;
* a prediction without a label after the TTL is counted as expired unlabelled.

The store keeps one dict entry per pending id (``str -> slot``: atomic keys and values, so
the cyclic garbage collector never scans it) and the rest in flat numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.statistics import IntArray


class PendingPredictions:
    """Predictions waiting for labels: ``id -> slot`` in a dict, everything else in
    per-slot numpy columns (the schema is given at construction)."""

    def __init__(self, columns: dict[str, type], capacity: int = 1024) -> None:
        self.capacity = capacity
        self.slots: dict[str, int] = {}
        self.timestamps = np.full(capacity, np.inf)
        self.columns: dict[str, npt.NDArray[Any]] = {
            name: np.zeros(capacity, dtype=dtype) for name, dtype in columns.items()
        }
        self._ids: list[str | None] = [None] * capacity
        self._free = list(range(capacity - 1, -1, -1))

    def __len__(self) -> int:
        return len(self.slots)

    def _grow(self) -> None:
        old = self.capacity
        self.capacity *= 2
        self.timestamps = np.concatenate([self.timestamps, np.full(old, np.inf)])
        for name, column in self.columns.items():
            self.columns[name] = np.concatenate([column, np.zeros(old, dtype=column.dtype)])
        self._ids.extend([None] * old)
        self._free.extend(range(self.capacity - 1, old - 1, -1))

    def add(self, prediction_id: str, timestamp: float, values: dict[str, float | int]) -> bool:
        """Store a prediction; False (and nothing stored) if its id is already waiting."""
        if prediction_id in self.slots:
            return False
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self.slots[prediction_id] = slot
        self.timestamps[slot] = timestamp
        for name, value in values.items():
            self.columns[name][slot] = value
        self._ids[slot] = prediction_id
        return True

    def take(self, prediction_id: str) -> tuple[int, float] | None:
        """Remove a waiting prediction; return its slot (whose columns stay valid until the
        next add) and its event time."""
        slot = self.slots.pop(prediction_id, None)
        if slot is None:
            return None
        timestamp = float(self.timestamps[slot])
        self._release(slot)
        return slot, timestamp

    def _release(self, slot: int) -> None:
        self.timestamps[slot] = np.inf
        self._ids[slot] = None
        self._free.append(slot)

    def expire(self, before: float) -> IntArray:
        """Drop every prediction older than ``before``; return their slots (valid until the
        next add)."""
        old = np.flatnonzero(self.timestamps < before)
        for slot in old.tolist():
            prediction_id = self._ids[slot]
            if prediction_id is not None:
                del self.slots[prediction_id]
            self._release(slot)
        return old
