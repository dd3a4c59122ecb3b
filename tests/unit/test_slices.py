"""The heavy-hitter summary behind slices: its error bounds, against exact counting."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.slices import RecentCounts

# batches of small integers drawn with a skew, so some values are frequent and many are not
values = st.integers(0, 40).map(lambda i: f"v{i * i // 40}" if i % 3 else f"rare{i}")
batches = st.lists(st.lists(values, min_size=1, max_size=60), min_size=1, max_size=30)


@given(batches, st.integers(1, 8), st.sampled_from([5.0, 50.0, 1e9]))
def test_counts_stay_within_the_misra_gries_bounds(
    stream: list[list[str]], capacity: int, half_life: float
) -> None:
    recent = RecentCounts(capacity, half_life)
    exact: dict[str, float] = {}
    for batch in stream:
        decay = 0.5 ** (len(batch) / half_life)
        exact = {v: c * decay for v, c in exact.items()}
        for v, n in Counter(batch).items():
            exact[v] = exact.get(v, 0.0) + n
        recent.update(Counter(batch))
        assert len(recent.counts) <= capacity
        assert recent.total == pytest.approx(sum(exact.values()))
        slack = recent.total / (capacity + 1)
        for v, true in exact.items():
            kept = recent.counts.get(v, 0.0)
            assert kept <= true + 1e-9
            assert kept >= true - slack - 1e-9


def test_a_frequent_value_among_a_flood_of_unique_ones_is_counted() -> None:
    recent = RecentCounts(capacity=100)
    for batch in range(200):
        unique = [f"u{batch}-{i}" for i in range(1900)]
        recent.update(Counter([*unique, *["DE"] * 100]))  # DE: 5% of the traffic
    assert recent.share("DE") == pytest.approx(0.05, abs=0.01)
    assert max(recent.counts, key=recent.counts.__getitem__) == "DE"
