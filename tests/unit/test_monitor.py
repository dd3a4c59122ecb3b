from __future__ import annotations

import numpy as np

from streamwatch.config import parse_settings
from streamwatch.decode import Prediction
from streamwatch.monitor import Monitor

SETTINGS = parse_settings(
    {
        "models": [
            {
                "name": "m",
                "task": "binary",
                "reference": {"warmup_events": 400},
                "features": [
                    {"name": "a", "type": "numeric"},
                    {"name": "b", "type": "numeric"},
                    {"name": "c", "type": "categorical"},
                ],
            }
        ],
        "drift": {"window_events": 300, "bins": 8, "psi_threshold": 0.2},
    }
)


def batch(
    start: int, n: int, partition: int = 0, shift: float = 0.0, version: str = "v1", seed: int = 0
) -> list[Prediction]:
    rng = np.random.default_rng(seed + start)
    a = rng.normal(shift, 1.0, n)
    b = rng.normal(0.0, 1.0, n)
    return [
        Prediction(
            f"p{start + i}",
            "m",
            version,
            float(start + i),
            {"a": float(a[i]), "b": float(b[i]), "c": "x"},
            0.5,
            None,
            None,
            {},
            partition,
            start + i,
        )
        for i in range(n)
    ]


def test_no_score_while_warming_up_then_scores_without_alarm_when_stationary() -> None:
    monitor = Monitor(SETTINGS)
    monitor.apply(batch(0, 300))
    snap = monitor.snapshot()
    assert snap.scores == []
    assert snap.warmup_ratio[("m", "v1")] == 0.75
    for start in range(300, 2000, 100):
        assert monitor.apply(batch(start, 100)) == []
    snap = monitor.snapshot()
    assert snap.warmup_ratio[("m", "v1")] == 1.0
    assert {s.feature for s in snap.scores} == {"a", "b"}
    assert all(0 <= s.psi < 0.2 for s in snap.scores)


def test_a_shift_in_one_feature_alarms_that_feature_once() -> None:
    monitor = Monitor(SETTINGS)
    for start in range(0, 1000, 100):
        monitor.apply(batch(start, 100))
    raised = []
    for start in range(1000, 3000, 100):
        raised += monitor.apply(batch(start, 100, shift=1.0))
    assert [(a.feature, a.model_version) for a in raised] == [("a", "v1")]
    assert 1000 <= raised[0].event_time < 1400  # within about one window of the shift
    assert monitor.snapshot().alarms == {("m", "v1", "a"): 1}


def test_versions_have_their_own_reference() -> None:
    monitor = Monitor(SETTINGS)
    monitor.apply(batch(0, 500, version="v1"))
    monitor.apply(batch(0, 100, version="v2", shift=3.0))
    ratios = monitor.snapshot().warmup_ratio
    assert ratios == {("m", "v1"): 1.0, ("m", "v2"): 0.25}


def test_revoking_a_partition_drops_its_window() -> None:
    monitor = Monitor(SETTINGS)
    monitor.assign([0, 1])
    monitor.apply(batch(0, 400, partition=0))
    monitor.apply(batch(400, 300, partition=0) + batch(700, 300, partition=1))
    assert {s.feature for s in monitor.snapshot().scores} == {"a", "b"}
    monitor.revoke([0])
    assert set(monitor.windows) == {1}
    # partition 1 alone still fills the window
    assert {s.feature for s in monitor.snapshot().scores} == {"a", "b"}
    monitor.revoke([1])
    assert monitor.snapshot().scores == []


def test_all_missing_feature_gives_no_score_rather_than_nan() -> None:
    monitor = Monitor(SETTINGS)
    events = batch(0, 1000)
    for p in events[400:]:  # every event after the warm-up
        p.features["b"] = None
    monitor.apply(events)
    features = {s.feature for s in monitor.snapshot().scores}
    assert features == {"a"}
