"""Admission: event-time bounds and the model-version cap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamwatch.admission import EventClock, VersionCap
from streamwatch.config import parse_settings
from streamwatch.records import Prediction
from streamwatch.slices import OTHER

NOW = 1_795_000_000.0
SETTINGS = parse_settings(
    {
        "models": [
            {
                "name": "m",
                "task": "binary",
                "max_versions": 3,
                "features": [{"name": "x", "type": "numeric"}],
            }
        ],
        "event_time": {"max_future_seconds": 60, "max_lateness_seconds": 3600},
    }
)


def _clock() -> EventClock:
    clock = EventClock(SETTINGS, clock=lambda: NOW)
    clock.start_batch()
    return clock


def test_the_future_is_bounded_by_the_wall_clock_not_by_the_data() -> None:
    clock = _clock()
    assert clock.check("t", 0, NOW + 59) is None
    reason = clock.check("t", 0, NOW + 61)
    assert reason is not None
    assert reason[0] == "future_timestamp"
    # a rejected event moves nothing: the next ordinary event is admitted
    assert clock.check("t", 0, 253_402_300_799.0) is not None
    assert clock.check("t", 0, NOW - 10) is None


def test_lateness_is_measured_per_partition_from_its_watermark() -> None:
    clock = _clock()
    assert clock.check("t", 0, NOW) is None
    assert clock.check("t", 0, NOW - 3599) is None
    late = clock.check("t", 0, NOW - 3601)
    assert late is not None
    assert late[0] == "late_timestamp"
    assert clock.check("t", 1, NOW - 3601) is None  # another partition has its own watermark
    clock.forget("t", 0)
    assert clock.check("t", 0, NOW - 3601) is None


@given(st.lists(st.floats(NOW - 10_000, NOW + 200), max_size=200))
def test_every_admitted_event_is_within_bounds(times: list[float]) -> None:
    clock = _clock()
    newest = float("-inf")
    for t in times:
        if clock.check("t", 0, t) is None:
            assert t <= NOW + 60
            assert t >= newest - 3600
            newest = max(newest, t)


def _p(i: int, version: str) -> Prediction:
    return Prediction(f"p{i}", "m", version, NOW, {"x": 1.0}, 0.5, None, None, {}, 0, i)


def test_versions_past_the_cap_count_under_other_and_the_busy_ones_stay() -> None:
    cap = VersionCap(SETTINGS)
    batch = [_p(i, "live") for i in range(500)] + [_p(i, f"junk{i}") for i in range(500)]
    out, overflow = cap.apply(batch)
    assert {p.model_version for p in out} <= {"live", OTHER} | set(cap.hitters["m"].tracked)
    assert "live" in cap.hitters["m"].tracked
    assert len(cap.hitters["m"].tracked) <= 3
    assert overflow["m"] == sum(p.model_version == OTHER for p in out)
    # a new version carrying real traffic displaces the lightest, which is reported
    for _ in range(5):
        out, _ = cap.apply(
            [_p(i, "canary") for i in range(300)] + [_p(i, "live") for i in range(300)]
        )
    assert {"live", "canary"} <= set(cap.hitters["m"].tracked)
    assert all(p.model_version != OTHER for p in out)
    displaced = cap.take_displaced()
    assert all(model == "m" and version not in ("live", "canary") for model, version in displaced)
