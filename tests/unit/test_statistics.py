"""Statistics against independent implementations (scipy, numpy) on the same data."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from scipy.spatial import distance

from streamwatch.reference import NumericReference, bin_index
from streamwatch.statistics import (
    chi2_pvalue,
    jensen_shannon,
    ks_binned,
    ks_tolerance,
    mean_shift,
    psi,
)

samples = hnp.arrays(
    np.float64, st.integers(20, 400), elements=st.floats(-1e3, 1e3, allow_nan=False)
)


def _binned(reference: np.ndarray, live: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    ref = NumericReference.from_sample(reference, bins)
    assert ref is not None
    width = bins + 1
    live_counts = np.bincount(bin_index(live, ref.edges, width), minlength=width)
    return ref.counts[:-1], live_counts[:-1]


@given(samples, samples, st.integers(2, 50))
def test_ks_binned_is_within_its_stated_tolerance_of_scipy(
    reference: np.ndarray, live: np.ndarray, bins: int
) -> None:
    ref_counts, live_counts = _binned(reference, live, bins)
    exact = stats.ks_2samp(reference, live, method="asymp").statistic
    binned = ks_binned(ref_counts, live_counts)
    tolerance = ks_tolerance(ref_counts, live_counts)
    assert binned <= exact + 1e-9
    assert exact <= binned + tolerance + 1e-9


def test_ks_binned_is_close_with_fine_bins_on_a_real_shift() -> None:
    rng = np.random.default_rng(3)
    reference, live = rng.normal(0, 1, 20_000), rng.normal(0.3, 1, 5_000)
    ref_counts, live_counts = _binned(reference, live, 100)
    exact = stats.ks_2samp(reference, live, method="asymp").statistic
    assert abs(float(ks_binned(ref_counts, live_counts)) - exact) < 0.02


@given(
    st.lists(st.integers(0, 200), min_size=2, max_size=12),
    st.lists(st.integers(0, 200), min_size=2, max_size=12),
)
def test_chi2_matches_scipy_chi2_contingency(a: list[int], b: list[int]) -> None:
    k = min(len(a), len(b))
    ref, live = np.array(a[:k]), np.array(b[:k])
    ours = chi2_pvalue(ref[None], live[None])[0]
    keep = (ref + live) > 0
    if keep.sum() < 2 or ref.sum() == 0 or live.sum() == 0:
        assert np.isnan(ours)
        return
    table = np.vstack([ref[keep], live[keep]])
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert np.isclose(ours, expected, rtol=1e-9, atol=1e-12)


@given(
    st.lists(st.integers(0, 100), min_size=2, max_size=10).filter(lambda x: sum(x) > 0),
    st.lists(st.integers(0, 100), min_size=2, max_size=10).filter(lambda x: sum(x) > 0),
)
def test_jensen_shannon_matches_scipy(a: list[int], b: list[int]) -> None:
    k = min(len(a), len(b))
    ref, live = np.array(a[:k]), np.array(b[:k])
    if ref.sum() == 0 or live.sum() == 0:
        return
    expected = distance.jensenshannon(ref / ref.sum(), live / live.sum(), base=2)
    assert np.isclose(jensen_shannon(ref, live), expected, atol=1e-7)


def test_psi_against_the_textbook_formula() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(1, 500, size=(3, 9))
    live = rng.integers(1, 500, size=(3, 9))
    got = psi(ref, live)
    for j in range(3):
        p, q = ref[j] / ref[j].sum(), live[j] / live[j].sum()
        assert np.isclose(got[j], np.sum((q - p) * np.log(q / p)))


def test_psi_is_zero_on_identical_finite_on_empty_bins_and_nan_without_values() -> None:
    ref = np.array([10, 20, 30])
    assert psi(ref, ref) == 0.0
    assert 1.0 < psi(ref, np.array([0, 0, 60])) < np.inf
    assert np.isnan(psi(ref, np.array([0, 0, 0])))


@given(samples, samples)
def test_mean_shift_matches_numpy(reference: np.ndarray, live: np.ndarray) -> None:
    std = reference.std()
    got = mean_shift(
        np.array([reference.mean()]),
        np.array([std]),
        np.array([live.sum()]),
        np.array([float(live.size)]),
    )[0]
    if std == 0:
        assert np.isnan(got)
    else:
        assert np.isclose(got, abs(live.mean() - reference.mean()) / std)
