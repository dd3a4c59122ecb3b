from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from streamwatch.detectors import PSI_EPSILON, CountWindow, bin_counts, psi, quantile_edges

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 200), st.integers(1, 4)),
        elements=finite | st.just(np.nan),
    ),
    st.integers(2, 12),
)
def test_bin_counts_match_numpy_histogram_per_feature(values: np.ndarray, bins: int) -> None:
    edges = quantile_edges(values, bins)
    width = bins + 1
    counts = bin_counts(values, edges, width)
    assert counts.sum() == values.size
    for j, e in enumerate(edges):
        column = values[:, j]
        present = column[~np.isnan(column)]
        # np.histogram over (-inf, e0, ..., +inf) with right-open bins, like searchsorted(right)
        expected = np.array(
            [
                np.sum((present >= lo) & (present < hi))
                for lo, hi in zip(np.r_[-np.inf, e], np.r_[e, np.inf], strict=True)
            ]
        )
        assert np.array_equal(counts[j, : len(e) + 1], expected)
        assert counts[j, -1] == np.isnan(column).sum()


def test_quantile_edges_give_equal_mass_bins() -> None:
    sample = np.random.default_rng(0).normal(size=(10_000, 1))
    counts = bin_counts(sample, quantile_edges(sample, 10), 11)
    assert np.all(np.abs(counts[0, :10] - 1000) <= 1)


def test_psi_against_the_textbook_formula() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(1, 500, size=(3, 9))
    live = rng.integers(1, 500, size=(3, 9))
    got = psi(ref, live)
    for j in range(3):
        p = ref[j, :-1] / ref[j, :-1].sum()
        q = live[j, :-1] / live[j, :-1].sum()
        assert np.isclose(got[j], np.sum((q - p) * np.log(q / p)))


def test_psi_is_zero_on_identical_and_finite_on_empty_bins() -> None:
    ref = np.array([[10, 20, 30, 5]])
    assert psi(ref, ref)[0] == 0.0
    shifted = np.array([[0, 0, 60, 0]])
    value = psi(ref, shifted)[0]
    assert np.isfinite(value)
    assert value > 1.0
    assert PSI_EPSILON > 0


def test_psi_without_values_is_nan_never_a_number_that_looks_fine() -> None:
    assert np.isnan(psi(np.array([[10, 10, 0]]), np.array([[0, 0, 7]]))[0])


@settings(max_examples=60)
@given(st.integers(5, 300), st.lists(st.integers(1, 80), min_size=1, max_size=40))
def test_window_updates_equal_recomputing_from_scratch(size: int, batch_sizes: list[int]) -> None:
    rng = np.random.default_rng(len(batch_sizes))
    values = rng.normal(size=(sum(batch_sizes), 2))
    edges = quantile_edges(values, 5)
    window = CountWindow(size, np.zeros((2, 6), dtype=np.int64))
    end = 0
    for i, n in enumerate(batch_sizes):
        window.add(bin_counts(values[end : end + n], edges, 6), n)
        end += n
        # The window holds the newest whole batches whose total first reaches `size`.
        events = 0
        for m in reversed(batch_sizes[: i + 1]):
            if events >= size:
                break
            events += m
        assert window.events == events
        assert np.array_equal(window.counts, bin_counts(values[end - events : end], edges, 6))
