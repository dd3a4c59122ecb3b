"""The drift monitor keeps its false-alarm budget on stationary streams of every family.

Through the real engine (the monitor the worker and replay run), 12 features and a
prediction, at a budget loose enough to count alarms in a unit test: one per 1,000 events
per model. The budget is split over the signals' one-sided charts (Bonferroni) and the
charts share each event, so together they fire somewhat less often than the budget:
the count must not exceed the budget's Poisson upper limit (one-sided 0.1%), and must not
fall under a quarter of it (a test that never fires would pass the first check alone).
bench/detection measures the same at the default budget over 10^7 events per family.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from streamwatch.config import parse_settings
from streamwatch.monitor import Monitor
from streamwatch.records import Prediction

FEATURES = 12
WARMUP = 5_000
EVENTS = 100_000
BUDGET = 1_000.0

FAMILIES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.normal(size=(n, FEATURES)),
    "heavy tails (t2)": lambda rng, n: rng.standard_t(2, (n, FEATURES)),
    "skewed (lognormal)": lambda rng, n: rng.lognormal(0, 1.5, (n, FEATURES)),
    "discrete (Poisson 2)": lambda rng, n: rng.poisson(2.0, (n, FEATURES)).astype(float),
}


def _alarms(values: np.ndarray, predictions: np.ndarray) -> int:
    settings = parse_settings(
        {
            "models": [
                {
                    "name": "m",
                    "task": "binary",
                    "reference": {"warmup_events": WARMUP},
                    "features": [{"name": f"x{i}", "type": "numeric"} for i in range(FEATURES)],
                }
            ],
            "drift": {"false_alarm_budget_events": BUDGET, "windows": [{"events": 2000}]},
        }
    )
    monitor = Monitor(settings)
    names = [f"x{i}" for i in range(FEATURES)]
    count = 0
    for start in range(0, len(values), 2000):
        rows = values[start : start + 2000].tolist()
        batch = [
            Prediction(
                str(start + i),
                "m",
                "v1",
                float(start + i),
                dict(zip(names, row, strict=True)),
                float(predictions[start + i]),
                None,
                None,
                {},
                0,
                start + i,
            )
            for i, row in enumerate(rows)
        ]
        count += sum(1 for a in monitor.apply(batch) if a.offset >= WARMUP)
    return count


@pytest.mark.parametrize("family", list(FAMILIES))
def test_false_alarms_on_a_stationary_stream_stay_within_the_budget(family: str) -> None:
    rng = np.random.default_rng(17)
    values = FAMILIES[family](rng, WARMUP + EVENTS)
    predictions = rng.uniform(size=WARMUP + EVENTS)  # the prediction is a signal too
    alarms = _alarms(values, predictions)
    expected = EVENTS / BUDGET
    assert alarms <= expected + 3.1 * math.sqrt(expected), alarms
    assert alarms >= expected / 4, alarms
