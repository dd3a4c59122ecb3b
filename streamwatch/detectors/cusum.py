"""CUSUM charts on normal scores, vectorised over a micro-batch and all numeric signals.

One-sided charts per signal, at each design: the mean up and down (``±z - k``) and the
scale up and down (``±(|z| - m)/s - k``). A chart is fastest on the shift it is designed
for (``k`` half of it) and slow on much smaller ones, so the bank runs several designs and
the budget is split across them (docs/detection.md).

The recursion ``S_t = max(0, S_{t-1} + Y_t)`` has the closed form
``S_t = C_t - min(-S_0, min_{s<=t} C_s)`` with ``C`` the running sum of increments, so a
whole batch is two numpy scans per chart; Python only runs again after an alarm, to restart
that signal's charts from zero on the next event (river's convention: a detector resets
itself after it fires).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamwatch.detectors.base import Crossing
from streamwatch.detectors.calibration import HALF_NORMAL_MEAN, HALF_NORMAL_STD
from streamwatch.statistics import FloatArray

FAMILIES = ("mean", "mean", "scale_up", "scale_down")  # calibration family of each kind
CHUNK = 1024  # events scanned at once


def scan(increments: FloatArray, start: FloatArray) -> FloatArray:
    """CUSUM values after each event: rows are events, columns are charts."""
    c = np.cumsum(increments, axis=0)
    return c - np.minimum(np.minimum.accumulate(c, axis=0), -start)


@dataclass(frozen=True)
class Chart:
    """One one-sided chart, run on every signal of the bank."""

    kind: int  # 0 mean up, 1 mean down, 2 scale up, 3 scale down
    design: float  # the shift (in sigmas) or the spread ratio it is tuned to
    k: float
    h: float

    @property
    def detector(self) -> str:
        return "cusum_mean" if self.kind < 2 else "cusum_scale"


@dataclass
class CusumBank:
    """Mean and scale CUSUMs at several designs for ``n`` signals; the thresholds come from
    :func:`streamwatch.detectors.calibration.threshold`."""

    n: int
    charts: list[Chart]
    state: FloatArray = field(init=False)

    def __post_init__(self) -> None:
        self.state = np.zeros((len(self.charts), self.n))
        self._kinds = np.array([c.kind for c in self.charts])
        self._k = np.array([c.k for c in self.charts])[:, None, None]

    @property
    def thresholds(self) -> FloatArray:
        return np.array([c.h for c in self.charts])

    def increments(self, z: FloatArray) -> FloatArray:
        """(charts, events, signals) increments; missing values (NaN) add nothing."""
        a = (np.abs(z) - HALF_NORMAL_MEAN) / HALF_NORMAL_STD
        y = np.stack([z, -z, a, -a])[self._kinds] - self._k
        return np.where(np.isnan(y), 0.0, y)

    def update(self, z: FloatArray) -> list[Crossing]:
        """Advance every chart over a batch of normal scores (events x signals)."""
        crossings: list[Crossing] = []
        # After an alarm the rest of a chunk is scanned again: chunks bound that work when
        # a lasting shift fires every few events.
        for start in range(0, z.shape[0], CHUNK):
            crossings += self._update(z[start : start + CHUNK], start)
        return crossings

    def _update(self, z: FloatArray, offset: int) -> list[Crossing]:
        y = self.increments(z)
        h = self.thresholds[:, None]
        crossings: list[Crossing] = []
        begin = 0
        state = self.state
        charts = len(self.charts)
        while begin < z.shape[0]:
            s = np.stack([scan(y[c, begin:], state[c]) for c in range(charts)])  # (C, n, f)
            over = s > h[:, None, :]
            if not over.any():
                state = s[:, -1, :]
                break
            # the earliest alarm in the rest of the chunk; charts restart after it
            first = over.any(axis=(0, 2)).argmax()
            for chart, signal in zip(*np.nonzero(over[:, first, :]), strict=True):
                crossings.append(
                    Crossing(
                        offset + begin + int(first),
                        int(signal),
                        self.charts[chart].detector,
                        float(s[chart, first, signal]),
                        float(h[chart, 0]),
                    )
                )
            state = s[:, first, :].copy()
            fired = over[:, first, :].any(axis=0)
            state[:, fired] = 0.0
            begin += int(first) + 1
        self.state = state
        return crossings

    def values(self) -> FloatArray:
        """Per signal, the chart closest to its threshold, as a fraction of it."""
        return np.asarray((self.state / self.thresholds[:, None]).max(axis=0), dtype=np.float64)

    def threshold_of(self, kind: int) -> float:
        """The threshold of the chart of this kind with the smallest design (exported)."""
        return min((c for c in self.charts if c.kind == kind), key=lambda c: c.design).h
