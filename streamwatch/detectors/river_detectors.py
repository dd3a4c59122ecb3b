"""river's drift detectors behind the bank interface, one instance per signal.

river's contract is per event: ``update(x)``, then the property ``drift_detected``, true
for exactly that update. This bank loops over events in Python (river has no batch API),
so it costs far more per event than the vectorised CUSUM; its false-alarm rate is river's
own and is not governed by streamwatch's budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from streamwatch.detectors.base import Crossing
from streamwatch.statistics import FloatArray

#: The river detectors on offer for drift, at river's default settings.
RIVER_DETECTORS = ("adwin", "page_hinkley", "kswin")
#: river's detectors on the 0/1 error stream (concept drift), as options to the CUSUM bank.
RIVER_CONCEPT_DETECTORS = ("ddm", "eddm", "hddm_a", "hddm_w", "adwin", "page_hinkley")


def river_detector(name: str) -> Any:
    """A new river detector by name, drift's or concept's: the one registry of river's
    detectors (river is imported on first use: it is slow to import)."""
    from river import drift

    factories: dict[str, Callable[[], Any]] = {
        "adwin": drift.ADWIN,
        "page_hinkley": drift.PageHinkley,
        "kswin": lambda: drift.KSWIN(seed=1),
        "ddm": drift.binary.DDM,
        "eddm": drift.binary.EDDM,
        "hddm_a": drift.binary.HDDMA,
        "hddm_w": drift.binary.HDDMW,
    }
    return factories[name]()


class RiverBank:
    def __init__(self, name: str, n: int) -> None:
        self.name = name
        self._detectors = [river_detector(name) for _ in range(n)]

    def update(self, values: FloatArray) -> list[Crossing]:
        """Feed raw values (events x signals); missing values are skipped."""
        crossings = []
        for j, detector in enumerate(self._detectors):
            column = values[:, j]
            for row in np.flatnonzero(~np.isnan(column)):
                detector.update(float(column[row]))
                if detector.drift_detected:
                    crossings.append(Crossing(int(row), j, self.name, None, None))
        return crossings
