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
unit (two per design and family: ten per numeric signal at the default designs), and so is
each tested category of a categorical signal (its bank of Bernoulli CUSUMs), or, with
``chi2``, each categorical signal's test series. A CUSUM chart or a category's bank gets an
in-control run length of ``budget x units``; a chi-square test of ``n`` events gets
``alpha = n / (budget x units)``. Rates add up, so the whole model version meets the
budget (a Bonferroni split over signals and, for the tests, over time). A version's
detectors see all of its events a worker reads (one order, whatever the partitions); with
several workers in ``engine.mode: local``, a chart that sees 1/W of the events fires at 1/W
of the rate per event, so the workers together do not use up more budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamwatch.detectors.base import Crossing
from streamwatch.detectors.calibration import HALF_NORMAL_MEAN, HALF_NORMAL_STD, threshold
from streamwatch.detectors.categories import CategoryBank
from streamwatch.detectors.chi2 import Chi2Bank
from streamwatch.detectors.cusum import Chart, CusumBank
from streamwatch.detectors.river_detectors import RIVER_DETECTORS, RiverBank

DETECTORS = ("cusum", *RIVER_DETECTORS)
MEAN_SHIFTS = (0.35, 0.7, 1.4)  # the default designs, in standard deviations
SCALE_RATIOS = (1.35, 1.7)

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
    mean_shifts: tuple[float, ...] = MEAN_SHIFTS
    scale_ratios: tuple[float, ...] = SCALE_RATIOS

    @property
    def charts_per_signal(self) -> int:
        return 2 * (len(self.mean_shifts) + len(self.scale_ratios))

    @property
    def units(self) -> int:
        return max(1, self.charts_per_signal * self.cusum_signals + self.categorical_units)

    @property
    def chart_run_length(self) -> float:
        return self.events_between_false_alarms * self.units

    def chi2_alpha(self, events_per_test: int) -> float:
        return events_per_test / (self.events_between_false_alarms * self.units)

    def cusum_bank(self) -> CusumBank:
        arl = self.chart_run_length
        charts = []
        for shift in self.mean_shifts:
            k = shift / 2.0
            h = threshold("mean", k, arl)
            charts += [Chart(0, shift, k, h), Chart(1, shift, k, h)]
        for ratio in self.scale_ratios:
            k = HALF_NORMAL_MEAN * (ratio - 1.0) / HALF_NORMAL_STD / 2.0
            charts += [
                Chart(2, ratio, k, threshold("scale_up", k, arl)),
                Chart(3, ratio, k, threshold("scale_down", k, arl)),
            ]
        return CusumBank(self.cusum_signals, charts)
