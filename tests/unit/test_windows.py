"""Incremental windows equal recomputing from scratch."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.windows import CountWindow, Table, TimeWindow, TumblingWindow


def table_of(values: np.ndarray) -> Table:
    """A one-signal table: 4 bins on fixed edges, plus sums."""
    bins = np.bincount(np.searchsorted([-1.0, 0.0, 1.0], values), minlength=5)[None, :]
    return Table(
        len(values),
        bins,
        np.array([values.sum()]),
        np.array([len(values)]),
        np.array([int((np.abs(values) > 2).sum())]),
        np.zeros(0, np.int64),
        np.zeros(1, np.int64),
    )


def same(a: Table, b: Table) -> bool:
    return (
        a.events == b.events
        and np.array_equal(a.bins, b.bins)
        and np.allclose(a.sums, b.sums)
        and np.array_equal(a.present, b.present)
        and np.array_equal(a.out_of_range, b.out_of_range)
    )


@settings(max_examples=80)
@given(st.integers(5, 300), st.lists(st.integers(1, 2000), min_size=1, max_size=40))
def test_count_window_holds_the_last_events_whatever_the_batch(
    size: int, batch_sizes: list[int]
) -> None:
    """The window is the newest events, from ``size`` to ``size + chunk - 1`` of them once
    filled, even when one batch holds many windows' worth (a backlog)."""
    values = np.random.default_rng(len(batch_sizes)).normal(size=sum(batch_sizes))
    window = CountWindow(size, table_of(np.zeros(0)))
    end = 0
    for n in batch_sizes:
        batch = values[end : end + n]

        def table(rows: slice, batch: np.ndarray = batch) -> Table:
            return table_of(batch[rows])

        window.add_rows(n, table)
        end += n
        events = window.total.events
        assert min(end, size) <= events <= size + window.chunk - 1
        assert same(window.total, table_of(values[end - events : end]))
        assert len(window._tables) <= 2 * (size + window.chunk) // window.chunk + 1


@settings(max_examples=80)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.floats(0, 500)), min_size=1, max_size=30),
    st.floats(10, 2000),
    st.integers(1, 30),
)
def test_time_window_equals_recomputing(
    batches: list[tuple[int, float]], seconds: float, buckets: int
) -> None:
    rng = np.random.default_rng(len(batches))
    window = TimeWindow(seconds, table_of(np.zeros(0)), buckets=buckets)
    clock = 0.0
    seen_values, seen_times = [], []
    for n, advance in batches:
        clock += advance
        times = clock - rng.uniform(0, 50, n)  # slightly out of order, like real streams
        values = rng.normal(size=n)
        ids = window.bucket_of(times)
        for bucket in np.unique(ids):
            window.add(int(bucket), table_of(values[ids == bucket]), float(times.max()))
        seen_values.append(values)
        seen_times.append(times)
        # From scratch: every event seen whose bucket is still inside the window, and that
        # arrived when its bucket was inside the window then (late events are not added).
        oldest = int(np.floor((window.watermark - seconds) / window.bucket_seconds)) + 1
        kept = []
        watermark = float("-inf")
        for v, t in zip(seen_values, seen_times, strict=True):
            watermark = max(watermark, float(t.max()))
            floor_then = int(np.floor((watermark - seconds) / window.bucket_seconds)) + 1
            b = window.bucket_of(t)
            kept.append(v[(b >= floor_then) & (b >= oldest)])
        assert same(window.total, table_of(np.concatenate(kept)))


@settings(max_examples=80)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.floats(0, 500)), min_size=1, max_size=30),
    st.floats(10, 2000),
    st.integers(0, 3),
)
def test_tumbling_window_equals_recomputing(
    batches: list[tuple[int, float]], seconds: float, keep: int
) -> None:
    """The total is the newest closed span: every event in it that arrived while its span
    was at most ``keep`` spans older than the closed one."""
    rng = np.random.default_rng(len(batches))
    window = TumblingWindow(seconds, table_of(np.zeros(0)), keep=keep)
    clock = 0.0
    arrived: list[tuple[np.ndarray, np.ndarray, int]] = []  # values, spans, closed then
    for n, advance in batches:
        clock += advance
        times = clock - rng.uniform(0, 3 * seconds, n)  # late by up to three spans
        values = rng.normal(size=n)
        spans = window.bucket_of(times)
        for span in np.unique(spans):
            window.add(int(span), table_of(values[spans == span]), float(times.max()))
        arrived.append((values, spans, window.closed))
        closed = int(np.floor(window.watermark / seconds)) - 1
        assert window.closed == closed
        kept = [v[(s == closed) & (s >= then - keep)] for v, s, then in arrived]
        assert same(window.total, table_of(np.concatenate(kept)))
