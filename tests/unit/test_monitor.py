from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamwatch.config import parse_settings
from streamwatch.monitor import Monitor
from streamwatch.records import Prediction, Rejection

CONFIG: dict[str, Any] = {
    "models": [
        {
            "name": "m",
            "task": "binary",
            "reference": {"warmup_events": 1000},
            "features": [
                {"name": "a", "type": "numeric"},
                {"name": "b", "type": "numeric"},
                {"name": "c", "type": "categorical"},
            ],
        }
    ],
    "drift": {
        "windows": [{"events": 500}, {"seconds": 600}],
        "min_window_events": 100,
        "categorical_test_events": 500,
    },
}
SETTINGS = parse_settings(CONFIG)


def batch(
    start: int,
    n: int,
    partition: int = 0,
    shift: float = 0.0,
    version: str = "v1",
    c_probs: tuple[float, float] = (0.7, 0.3),
) -> list[Prediction]:
    rng = np.random.default_rng(start + 1000 * partition)
    a = rng.normal(shift, 1.0, n)
    b = rng.normal(0.0, 1.0, n)
    c = rng.choice(["x", "y"], n, p=list(c_probs))
    score = rng.uniform(0, 1, n)
    return [
        Prediction(
            f"p{start + i}",
            "m",
            version,
            float(start + i),
            {"a": float(a[i]), "b": float(b[i]), "c": str(c[i])},
            float(score[i]),
            None,
            None,
            {},
            partition,
            start + i,
        )
        for i in range(n)
    ]


def scores(monitor: Monitor, statistic: str, window: str = "events_500") -> dict[str, float]:
    return {
        f: v
        for (_, _, _, _, f, s, w, v) in monitor.snapshot().scores
        if s == statistic and w == window
    }


def test_warming_up_is_said_not_silently_missing() -> None:
    monitor = Monitor(SETTINGS)
    monitor.apply(batch(0, 750))
    snap = monitor.snapshot()
    assert snap.scores == []
    assert snap.warmup == [("m", "v1", "__all__", 0.75)]
    reasons = {(s, f, w): r for (_, _, _, s, f, w, r) in snap.undefined}
    assert reasons[("feature", "a", "events_500")] == "warming_up"
    assert reasons[("prediction", "prediction", "10m")] == "warming_up"
    assert snap.model_info == []


def test_stationary_stream_scores_everything_and_raises_nothing() -> None:
    monitor = Monitor(SETTINGS)
    alarms = []
    for start in range(0, 20_000, 500):
        alarms += monitor.apply(batch(start, 500))
    assert alarms == []
    snap = monitor.snapshot()
    assert snap.model_info == [("m", "v1", "warmup", "", "", "", "")]
    assert set(scores(monitor, "psi")) == {"a", "b", "c", "prediction"}
    assert set(scores(monitor, "ks")) == {"a", "b", "prediction"}
    assert set(scores(monitor, "chi2_pvalue")) == {"c"}
    assert all(v < 0.1 for v in scores(monitor, "psi").values())
    windows = dict((w, n) for (_, _, _, w, n, _) in snap.windows)
    assert windows["10m"] == 600
    assert 500 <= windows["events_500"] < 500 + 500 // 16  # whole chunks of 31 events
    quality = {(f, c): r for (_, _, _, f, c, r) in snap.quality}
    assert quality[("a", "missing")] == 0.0
    assert quality[("c", "unseen_category")] == 0.0
    assert {d for (_, _, _, d, _) in snap.thresholds} == {
        "cusum_mean",
        "cusum_scale_up",
        "cusum_scale_down",
    }
    assert {(f, d) for (*_, f, d, _) in snap.detector_ratio} == {
        ("a", "cusum"),
        ("b", "cusum"),
        ("prediction", "cusum"),
        ("c", "cusum_category"),
    }
    assert all(0 <= r < 1 for (*_, r) in snap.detector_ratio)


def test_a_mean_shift_in_one_feature_alarms_that_feature_within_a_few_hundred_events() -> None:
    monitor = Monitor(SETTINGS)
    for start in range(0, 5000, 500):
        assert monitor.apply(batch(start, 500)) == []
    raised = []
    for start in range(5000, 8000, 500):
        raised += monitor.apply(batch(start, 500, shift=0.5))
    features = {(a.feature, a.detector) for a in raised}
    assert features == {("a", "cusum_mean")}
    first = min(a.offset for a in raised)
    assert 5000 <= first < 5500
    assert monitor.snapshot().alarms[("m", "v1", "__all__", "feature", "a", "cusum_mean")] == len(
        raised
    )
    assert scores(monitor, "mean_shift")["a"] > 0.3


@pytest.mark.parametrize("detector", ["cusum_category", "chi2"])
def test_a_category_frequency_change_raises_an_alarm(detector: str) -> None:
    categorical = "chi2" if detector == "chi2" else "cusum"
    monitor = Monitor(
        parse_settings(CONFIG | {"drift": CONFIG["drift"] | {"categorical_detector": categorical}})
    )
    for start in range(0, 5000, 500):
        monitor.apply(batch(start, 500))
    raised = monitor.apply(batch(5000, 1000, c_probs=(0.4, 0.6)))
    assert {(a.feature, a.detector) for a in raised} == {("c", detector)}
    if detector == "cusum_category":  # per event: long before a 1,000-event window fills
        assert min(a.offset for a in raised) < 5000 + 100


def test_versions_have_their_own_reference() -> None:
    monitor = Monitor(SETTINGS)
    monitor.apply(batch(0, 1200, version="v1"))
    monitor.apply(batch(0, 100, version="v2", shift=3.0))
    assert sorted(monitor.snapshot().warmup) == [
        ("m", "v1", "__all__", 1.0),
        ("m", "v2", "__all__", 0.1),
    ]


def test_a_segment_has_one_window_whatever_the_partitions() -> None:
    """Events of every partition fill the same window: events_500 holds the segment's last
    500 to 500 + 500/16 - 1 events (it drops a chunk at a time), not 500 per partition."""
    monitor = Monitor(SETTINGS)
    monitor.apply(batch(0, 1000, partition=0))  # the warm-up
    monitor.apply(batch(1000, 300, partition=0) + batch(1300, 300, partition=1))
    counts = {n for (_, _, _, w, n, _) in monitor.snapshot().windows if w == "events_500"}
    assert len(counts) == 1
    assert 500 <= counts.pop() < 500 + 500 // 16


def test_a_feature_that_went_missing_has_no_score_and_a_missing_ratio() -> None:
    monitor = Monitor(SETTINGS)
    monitor.apply(batch(0, 1000))
    events = batch(1000, 1000)
    for p in events:
        p.features["b"] = None
    monitor.apply(events)
    snap = monitor.snapshot()
    assert "b" not in scores(monitor, "psi")
    assert ("m", "v1", "__all__", "feature", "b", "events_500", "no_values") in snap.undefined
    assert ("m", "v1", "__all__", "b", "missing", 1.0) in snap.quality


def test_type_errors_count_in_the_quality_ratio() -> None:
    monitor = Monitor(SETTINGS)
    monitor.apply(batch(0, 1400))
    bad = [
        Rejection("predictions", 0, 9999, "wrong_type", "", None, None, None, "m", "v1", "a")
        for _ in range(4)
    ]
    monitor.apply(batch(1400, 100), bad)
    quality = {(f, c): r for (_, _, _, f, c, r) in monitor.snapshot().quality}
    events = 500  # the count window: whole batches reaching 500 events
    assert quality[("a", "type_error")] == 4 / (events + 4)
    assert quality[("b", "type_error")] == 0.0


def test_a_version_without_predictions_for_a_while_is_retired() -> None:
    monitor = Monitor(parse_settings({**CONFIG, "exporter": {"retire_after_seconds": 5000}}))
    monitor.apply(batch(0, 2000, shift=3.0, version="v1"))  # warm-up, then a drift alarm...
    monitor.apply(batch(2000, 2000, shift=0.0, version="v1"))
    assert {k[1] for k in monitor.snapshot().alarms} == {"v1"}
    monitor.apply(batch(4000, 2000, version="v2"))  # v1's newest event is 2000 s behind
    assert {w[1] for w in monitor.snapshot().warmup} == {"v1", "v2"}
    monitor.apply(batch(9000, 2000, version="v2"))  # ...now more than 5000 s behind
    snap = monitor.snapshot()
    assert {w[1] for w in snap.warmup} == {"v2"}
    assert {k[1] for k in snap.alarms} == {"v2"}  # v1's counters are gone; v2's start at 0
    assert not any(snap.alarms.values())
    assert all(row[1] == "v2" for row in snap.model_info + snap.windows)


def sliced_batch(start: int, n: int, shift_in: str = "", shift: float = 0.0) -> list[Prediction]:
    """Events of two countries (IS: one in ten); feature a shifts by ``shift`` in one."""
    rng = np.random.default_rng(start)
    countries = np.where(rng.random(n) < 0.1, "IS", "DE")
    a = rng.normal(0.0, 1.0, n) + np.where(countries == shift_in, shift, 0.0)
    return [
        Prediction(
            f"p{start + i}",
            "m",
            "v1",
            float(start + i),
            {"a": float(a[i]), "b": float(rng.normal()), "c": "x"},
            0.5,
            None,
            None,
            {"country": str(countries[i])},
            0,
            start + i,
        )
        for i in range(n)
    ]


def test_drift_in_one_slice_alarms_that_slice() -> None:
    """A mean shift in a tenth of the traffic: the slice's own charts catch it, against the
    slice's own reference; the other slice stays quiet."""
    config = {**CONFIG}
    config["models"] = [
        {
            **CONFIG["models"][0],
            "slices": [{"name": "country", "keys": ["country"], "max_values": 3, "drift": True}],
        }
    ]
    monitor = Monitor(parse_settings(config))
    raised = []
    for start in range(0, 20_000, 500):
        raised += monitor.apply(sliced_batch(start, 500))
    assert raised == []
    snap = monitor.snapshot()
    assert {row[2] for row in snap.warmup} == {"__all__", "country=DE", "country=IS"}
    # the version shares its false-alarm budget with the 3 slice values it may track
    single = Monitor(SETTINGS)
    single.apply(batch(0, 1500))
    h = {d: v for (_, _, sl, d, v) in snap.thresholds if sl == "__all__"}
    h_single = {d: v for (_, _, _, d, v) in single.snapshot().thresholds}
    assert h["cusum_mean"] > h_single["cusum_mean"]
    for start in range(20_000, 30_000, 500):
        raised += monitor.apply(sliced_batch(start, 500, shift_in="IS", shift=1.0))
    on_a = {(a.slice, a.detector) for a in raised if a.feature == "a"}
    assert ("country=IS", "cusum_mean") in on_a
    assert not any(a.slice == "country=DE" for a in raised)
    first = min(a.offset for a in raised if a.slice == "country=IS")
    assert 20_000 <= first < 22_000  # about 2,000 events hold 200 of the slice's


def test_a_scrape_computes_its_statistics_outside_the_engine_lock() -> None:
    """A batch waits for a scrape only while the totals are copied, never while PSI, KS and
    the rest are computed."""
    held: list[bool] = []

    class Watched(Monitor):
        def _scores(self, *args: Any) -> None:
            held.append(self._lock.locked())
            super()._scores(*args)

    monitor = Watched(SETTINGS)
    for start in range(0, 6000, 500):
        monitor.apply(batch(start, 500))
    monitor.snapshot()
    assert held
    assert not any(held)
