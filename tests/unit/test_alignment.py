"""Reading the two topics in step: which partitions the alignment pauses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamwatch.alignment import Alignment

P, L = "predictions", "labels"
ALIGN = Alignment(P, L, align_seconds=60)


def test_labels_far_ahead_wait_for_predictions_with_messages_left() -> None:
    watermarks = {(P, 0): 1000.0, (L, 0): 5000.0, (P, 1): 1000.0, (L, 1): 1050.0}
    lags = {(P, 0): 10, (P, 1): 10, (L, 0): 10, (L, 1): 10}
    assert ALIGN.ahead([0, 1], watermarks, lags) == {(L, 0)}  # partition 1 is within 60 s


def test_a_held_partition_waits_until_the_other_has_caught_up() -> None:
    watermarks = {(P, 0): 1000.0, (L, 0): 1030.0}  # within 60 s: not paused anew...
    lags = {(P, 0): 10, (L, 0): 10}
    assert ALIGN.ahead([0], watermarks, lags) == set()
    assert ALIGN.ahead([0], watermarks, lags, held={(L, 0)}) == {(L, 0)}  # ...but kept
    caught_up = {(P, 0): 1030.0, (L, 0): 1030.0}
    assert ALIGN.ahead([0], caught_up, lags, held={(L, 0)}) == set()


def test_predictions_far_ahead_wait_for_labels() -> None:
    watermarks = {(P, 0): 9000.0, (L, 0): 1000.0}
    assert ALIGN.ahead([0], watermarks, {(L, 0): 5}) == {(P, 0)}


def test_nothing_waits_for_a_partition_with_nothing_left_to_read() -> None:
    watermarks = {(P, 0): 1000.0, (L, 0): 5000.0}
    assert ALIGN.ahead([0], watermarks, {(P, 0): 0}) == set()
    assert ALIGN.ahead([0], watermarks, {}) == set()  # unknown lag: never stall


def test_a_topic_not_read_yet_holds_the_other_back_while_it_has_messages() -> None:
    assert ALIGN.ahead([0], {(L, 0): 5000.0}, {(P, 0): 100}) == {(L, 0)}
    assert ALIGN.ahead([0], {}, {(P, 0): 100, (L, 0): 100}) == set()


@given(
    st.floats(0, 1e9, allow_nan=False),
    st.floats(0, 1e9, allow_nan=False),
    st.integers(0, 10),
    st.integers(0, 10),
    st.floats(0, 1e4, allow_nan=False),
    st.sets(st.sampled_from([(P, 0), (L, 0)])),
)
def test_never_both_topics_of_a_partition(
    wp: float, wl: float, lag_p: int, lag_l: int, align: float, held: set[tuple[str, int]]
) -> None:
    """At most one side of a partition waits, so the alignment can never stall both."""
    paused = Alignment(P, L, align).ahead(
        [0], {(P, 0): wp, (L, 0): wl}, {(P, 0): lag_p, (L, 0): lag_l}, held
    )
    assert len(paused) <= 1


def test_no_partition_is_held_longer_than_the_limit() -> None:
    """A label stamped close to max_future_seconds ahead holds its partition back, but only
    for MAX_HOLD_SECONDS of wall clock: then it reads a batch, and with it newer event
    times than the outlier's."""
    from streamwatch.alignment import MAX_HOLD_SECONDS

    align = Alignment(P, L, align_seconds=10)
    lags = {(P, 0): 100, (L, 0): 100}
    outlier = {(P, 0): 1000.0, (L, 0): 1000.0 + 3500}
    assert align.update([0], outlier, lags, now=0.0) == ({(L, 0)}, set())
    assert align.update([0], outlier, lags, now=MAX_HOLD_SECONDS - 1) == (set(), set())
    assert align.update([0], outlier, lags, now=MAX_HOLD_SECONDS) == (set(), {(L, 0)})
    back = {(P, 0): 1001.0, (L, 0): 1002.0}  # the next labels are ordinary again
    assert align.update([0], back, lags, now=MAX_HOLD_SECONDS + 1) == (set(), set())
