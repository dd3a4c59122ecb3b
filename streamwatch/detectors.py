"""Detectors: drift statistics over binned feature values, on numpy micro-batches.

A reference (the first ``warmup_events`` of a model version, or later a profile file) fixes
each numeric feature's quantile bin edges and its bin proportions. Live values are binned per
micro-batch with ``np.searchsorted`` and counted with one ``np.bincount`` for all features;
a :class:`CountWindow` adds a batch's counts and subtracts the expired batches' counts, so the
window never needs to see an event twice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Proportions are floored at this value before the log in PSI, so an empty bin on one side
#: gives a large, finite contribution instead of infinity.
PSI_EPSILON = 1e-4


def quantile_edges(sample: FloatArray, bins: int) -> list[FloatArray]:
    """Inner bin edges per column (NaN = missing is ignored); ties collapse to unique edges."""
    edges = []
    qs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    for column in sample.T:
        finite = column[~np.isnan(column)]
        edges.append(np.unique(np.quantile(finite, qs)) if finite.size else np.empty(0))
    return edges


def bin_counts(values: FloatArray, edges: list[FloatArray], width: int) -> IntArray:
    """Counts per (feature, bin) for a batch; bin ``width - 1`` holds missing values (NaN).

    ``width`` must exceed the largest number of bins (``len(edges[i]) + 1``) of any feature.
    """
    n, f = values.shape
    index = np.empty((n, f), dtype=np.int64)
    for j, e in enumerate(edges):  # a loop over features, vectorised over the batch's events
        column = values[:, j]
        index[:, j] = np.searchsorted(e, column, side="right")
        index[np.isnan(column), j] = width - 1
    index += np.arange(f, dtype=np.int64) * width
    return np.bincount(index.ravel(), minlength=f * width).reshape(f, width)


def psi(reference: IntArray, live: IntArray) -> FloatArray:
    """Population stability index per row of two (feature, bin) count tables.

    Missing values (the last column) are left out: the data-quality checks watch them.
    A row without live or reference values gives NaN, which callers must not export.
    """
    ref = reference[:, :-1].astype(np.float64)
    cur = live[:, :-1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.maximum(ref / ref.sum(axis=1, keepdims=True), PSI_EPSILON)
        q = np.maximum(cur / cur.sum(axis=1, keepdims=True), PSI_EPSILON)
        return np.asarray(np.sum((q - p) * np.log(q / p), axis=1), dtype=np.float64)


@dataclass
class CountWindow:
    """The last ``size`` events' (feature, bin) counts, kept at batch granularity.

    It holds whole batches: at least ``size`` events once filled, at most ``size`` plus the
    last batch's events.
    """

    size: int
    counts: IntArray
    events: int = 0

    def __post_init__(self) -> None:
        self._batches: deque[tuple[IntArray, int]] = deque()

    def add(self, counts: IntArray, events: int) -> None:
        self._batches.append((counts, events))
        self.counts = self.counts + counts
        self.events += events
        while self._batches and self.events - self._batches[0][1] >= self.size:
            old, n = self._batches.popleft()
            self.counts = self.counts - old
            self.events -= n
