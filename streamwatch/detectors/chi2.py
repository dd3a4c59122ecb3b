"""Tumbling chi-square tests for categorical signals.

Each signal collects ``events_per_test`` events, then tests their category counts against
the reference's (chi-square test of homogeneity) at level ``alpha`` and starts over. The
tests never overlap, so the false-alarm rate is exactly ``alpha / events_per_test`` per
event and signal, which is how the budget is split (see :mod:`streamwatch.detectors`).
Categories expected fewer than 5 times in a test window are pooled with "other", where the
chi-square approximation would otherwise be poor.
"""

from __future__ import annotations

import numpy as np

from streamwatch.detectors.base import Crossing
from streamwatch.statistics import IntArray, chi2_pvalue

MIN_EXPECTED = 5.0


class Chi2Bank:
    def __init__(self, references: list[IntArray], events_per_test: int, alpha: float) -> None:
        self.events_per_test = events_per_test
        self.alpha = alpha
        self._columns: list[IntArray] = []  # code -> pooled test column
        self._references: list[IntArray] = []
        for counts in references:
            present = counts[:-1]  # the last column counts missing values: not tested
            expected = present / max(present.sum(), 1) * events_per_test
            other = len(present) - 1
            keep = [i for i in range(other) if expected[i] >= MIN_EXPECTED]
            column = np.full(len(counts), len(keep), dtype=np.int64)  # pooled "other"
            column[keep] = np.arange(len(keep))
            column[-1] = len(keep) + 1  # missing: counted, then dropped from the test
            self._columns.append(column)
            self._references.append(
                np.bincount(column, weights=counts, minlength=len(keep) + 2).astype(np.int64)
            )
        self._acc = [np.zeros_like(r) for r in self._references]
        self._filled = [0] * len(references)

    def update(self, codes: list[IntArray]) -> list[Crossing]:
        """Feed each signal's category codes for a batch (same length for every signal)."""
        crossings = []
        for i, signal_codes in enumerate(codes):
            pooled = self._columns[i][signal_codes]
            pos = 0
            while pos < len(pooled):
                chunk = pooled[pos : pos + self.events_per_test - self._filled[i]]
                self._acc[i] += np.bincount(chunk, minlength=len(self._acc[i]))
                self._filled[i] += len(chunk)
                pos += len(chunk)
                if self._filled[i] < self.events_per_test:
                    break
                p = float(chi2_pvalue(self._references[i][None, :-1], self._acc[i][None, :-1])[0])
                if p < self.alpha:
                    crossings.append(Crossing(pos - 1, i, "chi2", p, self.alpha))
                self._acc[i][:] = 0
                self._filled[i] = 0
        return crossings

    def values(self) -> list[float]:
        """Per signal, how full its current test window is (0 to 1)."""
        return [f / self.events_per_test for f in self._filled]
