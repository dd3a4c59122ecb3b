"""CUSUM charts on normal scores, vectorised over a micro-batch and all numeric signals.

Four one-sided charts per signal: the mean up and down (``±z - k``) and the scale up and
down (``±(|z| - m)/s - k``). The recursion ``S_t = max(0, S_{t-1} + Y_t)`` has the closed
form ``S_t = C_t - min(-S_0, min_{s<=t} C_s)`` with ``C`` the running sum of increments, so
a whole batch is two numpy scans per chart; Python only runs again after an alarm, to
restart that chart from zero on the next event (river's convention: a detector resets
itself after it fires).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamwatch.detectors.base import Crossing
from streamwatch.detectors.calibration import HALF_NORMAL_MEAN, HALF_NORMAL_STD
from streamwatch.statistics import FloatArray

CHARTS = ("mean", "mean", "scale_up", "scale_down")  # calibration family of each side


def scan(increments: FloatArray, start: FloatArray) -> FloatArray:
    """CUSUM values after each event: rows are events, columns are charts."""
    c = np.cumsum(increments, axis=0)
    return c - np.minimum(np.minimum.accumulate(c, axis=0), -start)


@dataclass
class CusumBank:
    """Mean and scale CUSUMs for ``n`` signals. ``h_mean`` and ``h_scale_*`` come from
    :func:`streamwatch.detectors.calibration.threshold`."""

    n: int
    k_mean: float
    k_scale: float
    h_mean: float
    h_scale_up: float
    h_scale_down: float
    state: FloatArray = field(init=False)

    def __post_init__(self) -> None:
        self.state = np.zeros((4, self.n))  # mean up, mean down, scale up, scale down

    @property
    def thresholds(self) -> FloatArray:
        return np.array([self.h_mean, self.h_mean, self.h_scale_up, self.h_scale_down])

    def increments(self, z: FloatArray) -> FloatArray:
        """(4, events, signals) increments; missing values (NaN) add nothing."""
        a = (np.abs(z) - HALF_NORMAL_MEAN) / HALF_NORMAL_STD
        y = np.stack([z - self.k_mean, -z - self.k_mean, a - self.k_scale, -a - self.k_scale])
        return np.where(np.isnan(y), 0.0, y)

    def update(self, z: FloatArray) -> list[Crossing]:
        """Advance every chart over a batch of normal scores (events x signals)."""
        y = self.increments(z)
        h = self.thresholds[:, None]
        crossings: list[Crossing] = []
        begin = 0
        state = self.state
        while begin < z.shape[0]:
            s = np.stack([scan(y[c, begin:], state[c]) for c in range(4)])  # (4, n, f)
            over = s > h[:, None, :]
            if not over.any():
                state = s[:, -1, :]
                break
            # the earliest alarm in the rest of the batch; charts restart after it
            first = over.any(axis=(0, 2)).argmax()
            for chart, signal in zip(*np.nonzero(over[:, first, :]), strict=True):
                crossings.append(
                    Crossing(
                        begin + int(first),
                        int(signal),
                        "cusum_mean" if chart < 2 else "cusum_scale",
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
