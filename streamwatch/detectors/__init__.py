"""Sequential drift detectors, and how a false-alarm budget is split between them.

Families (each a *bank*: one object runs a detector for many signals):

* ``cusum`` (default for numeric signals): mean and scale CUSUMs on normal scores,
  vectorised, thresholds calibrated from the budget (:mod:`.cusum`, :mod:`.calibration`);
* ``cusum`` for categorical signals (default): a Bernoulli CUSUM bank per category on its
  indicator, per event (:mod:`.categories`, :mod:`.bernoulli`);
* ``chi2`` (categorical signals, an option): tumbling chi-square tests (:mod:`.chi2`);
* ``adwin``, ``page_hinkley``, ``kswin``: river's detectors at their defaults, per event
  (:mod:`.river_detectors`); outside the budget.

The budget is the expected number of events between false alarms for one model version,
all its signals together. It is split evenly over *units*: each one-sided CUSUM chart is a
unit (four per numeric signal), and so is each tested category of a categorical signal
(its bank of Bernoulli CUSUMs), or, with ``chi2``, each categorical signal's test series. A CUSUM
chart gets an in-control run length of ``budget x units``; a chi-square test of ``n``
events gets ``alpha = n / (budget x units)``. Rates add up, so the whole model version
meets the budget (a Bonferroni split over signals and, for the tests, over time).
Each partition runs its own detectors on its own events: a chart that sees 1/P of the
events fires at 1/P of the rate per event of the stream, so partitions do not use up
budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamwatch.detectors.base import Crossing
from streamwatch.detectors.calibration import HALF_NORMAL_MEAN, HALF_NORMAL_STD, threshold
from streamwatch.detectors.categories import CategoryBank
from streamwatch.detectors.chi2 import Chi2Bank
from streamwatch.detectors.cusum import CusumBank
from streamwatch.detectors.river_detectors import RIVER_DETECTORS, RiverBank

DETECTORS = ("cusum", *RIVER_DETECTORS)

__all__ = [
    "DETECTORS",
    "Budget",
    "CategoryBank",
    "Chi2Bank",
    "Crossing",
    "CusumBank",
    "RiverBank",
]


@dataclass(frozen=True)
class Budget:
    """A false-alarm budget and the detector settings derived from it."""

    events_between_false_alarms: float
    cusum_signals: int
    categorical_units: int  # tested categories (cusum), or categorical signals (chi2)
    mean_shift_sigmas: float = 0.5
    scale_ratio: float = 1.5

    @property
    def units(self) -> int:
        return max(1, 4 * self.cusum_signals + self.categorical_units)

    @property
    def chart_run_length(self) -> float:
        return self.events_between_false_alarms * self.units

    def chi2_alpha(self, events_per_test: int) -> float:
        return events_per_test / (self.events_between_false_alarms * self.units)

    def cusum_bank(self) -> CusumBank:
        k_mean = self.mean_shift_sigmas / 2.0
        k_scale = HALF_NORMAL_MEAN * (self.scale_ratio - 1.0) / HALF_NORMAL_STD / 2.0
        arl = self.chart_run_length
        return CusumBank(
            self.cusum_signals,
            k_mean,
            k_scale,
            threshold("mean", k_mean, arl),
            threshold("scale_up", k_scale, arl),
            threshold("scale_down", k_scale, arl),
        )
