"""Category frequencies tested per event: a Bernoulli CUSUM bank per category.

Each event of a categorical signal either is category ``c`` or not; on a stationary stream
that happens with the reference frequency ``q_c``. A frequency shift raises at least one
category's frequency (they sum to one), and a new category raises "other"'s, so one
:class:`~streamwatch.detectors.bernoulli.ErrorCusum` per category, on the indicator
``code == c`` with ``p0 = q_c``, sees every change of the distribution, event by event
within a micro-batch: no window to fill first. Categories under 1% of the reference are
pooled into one column, so a signal has at most about 100 banks; categories the reference
never saw have their own ("other"), where a new category shows at once. Missing values are
not tested (the data-quality gauges count them).

Each category's bank is one unit of the budget (:mod:`streamwatch.detectors`).
"""

from __future__ import annotations

import numpy as np

from streamwatch.detectors.base import Crossing
from streamwatch.detectors.bernoulli import ErrorCusum, reference_bank
from streamwatch.statistics import IntArray

MIN_SHARE = 0.01  # reference share under which a category is pooled with "other"


def pooled(counts: IntArray) -> tuple[IntArray, IntArray]:
    """(code -> tested column, reference counts per column). The tested columns are the
    categories with at least MIN_SHARE of the reference, then the rarer ones pooled (when
    there are any), then "other" (categories outside the reference, which a new category
    lands in: its own column, so that its reference frequency stays near zero). The last
    code (missing values) maps to -1: not tested."""
    present = counts[:-1]  # the last present code is "other"
    total = max(int(present.sum()), 1)
    known = len(present) - 1
    keep = [i for i in range(known) if present[i] >= MIN_SHARE * total]
    rare = len(keep) < known
    column = np.full(len(counts), len(keep), dtype=np.int64)  # rare: pooled
    column[keep] = np.arange(len(keep))
    column[known] = len(keep) + rare  # "other"
    column[-1] = -1
    tested = np.bincount(column[:-1], weights=present, minlength=len(keep) + rare + 1)
    return column, tested.astype(np.int64)


class CategoryBank:
    """Per categorical signal, one Bernoulli CUSUM bank per (pooled) category."""

    def __init__(self, references: list[IntArray], run_length: float) -> None:
        self.run_length = run_length
        self._columns: list[IntArray] = []
        self._banks: list[list[ErrorCusum]] = []
        for counts in references:
            column, tested = pooled(counts)
            n = int(tested.sum())
            self._columns.append(column)
            self._banks.append([reference_bank(int(k), n, run_length) for k in tested])

    @staticmethod
    def units(references: list[IntArray]) -> int:
        """The budget units of these signals: one per tested category."""
        return sum(len(pooled(counts)[1]) for counts in references)

    def update(self, codes: list[IntArray]) -> list[Crossing]:
        """Feed each signal's category codes for a batch (same length for every signal)."""
        crossings = []
        for i, signal_codes in enumerate(codes):
            column = self._columns[i][signal_codes]
            rows = np.flatnonzero(column >= 0)  # missing values are not tested
            column = column[rows]
            for c, bank in enumerate(self._banks[i]):
                for r in bank.update((column == c).astype(np.float64)):
                    crossings.append(Crossing(int(rows[r]), i, "cusum_category", None, None))
        crossings.sort(key=lambda c: c.row)
        return crossings

    def values(self) -> list[float]:
        """Per signal, the chart closest to its threshold, as a fraction of it."""
        return [max((b.values() for b in banks), default=0.0) for banks in self._banks]
