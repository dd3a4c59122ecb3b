from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from streamwatch.reference import (
    CategoricalReference,
    Lineage,
    NumericReference,
    Profile,
    Signal,
    build_profile,
    uniforms,
)


@pytest.mark.parametrize(
    "sample",
    [
        np.random.default_rng(0).normal(5, 2, 20_000),
        np.random.default_rng(1).standard_t(2, 20_000),  # heavy tails
        np.random.default_rng(2).lognormal(0, 1.5, 20_000),  # skewed
        np.random.default_rng(3).poisson(3, 20_000).astype(float),  # discrete, many ties
    ],
)
def test_normal_scores_are_standard_on_a_stationary_stream(sample: np.ndarray) -> None:
    ref = NumericReference.from_sample(sample[:10_000], bins=20)
    assert ref is not None
    z = ref.normal_scores(sample[10_000:], uniforms(np.arange(10_000)))
    assert abs(z.mean()) < 0.05
    assert abs(z.std() - 1.0) < 0.05
    assert stats.kstest(z, "norm").statistic < 0.03  # normal, not only standardised


def test_normal_scores_of_a_normal_feature_keep_its_shift_in_sigmas() -> None:
    rng = np.random.default_rng(4)
    ref = NumericReference.from_sample(rng.normal(10, 3, 20_000), bins=20)
    assert ref is not None
    u = uniforms(np.arange(20_000))
    assert abs(ref.normal_scores(rng.normal(11.5, 3, 20_000), u).mean() - 0.5) < 0.05
    assert np.isnan(ref.normal_scores(np.array([np.nan]), u[:1])[0])


def test_numeric_summary_matches_numpy() -> None:
    values = np.array([1.0, 2.0, np.nan, 4.0, 10.0])
    ref = NumericReference.from_sample(values, bins=2)
    assert ref is not None
    finite = values[~np.isnan(values)]
    assert (ref.mean, ref.variance, ref.minimum, ref.maximum) == (
        finite.mean(),
        finite.var(),
        1.0,
        10.0,
    )
    assert ref.missing_rate == 0.2
    assert ref.counts.sum() == 5
    assert ref.counts[-1] == 1


def test_categorical_keeps_the_top_categories_and_counts_the_rest() -> None:
    values = np.array(["a"] * 5 + ["b"] * 3 + [None] * 2, dtype=object)
    ref = CategoricalReference.from_sample(values)
    assert ref.categories == ["a", "b"]
    assert ref.counts.tolist() == [5, 3, 0, 2]
    codes = ref.codes(np.array(["b", "zzz", None, "a", 7], dtype=object))
    assert codes.tolist() == [1, 2, 3, 0, 2]


def test_profile_round_trips_through_json(tmp_path: object) -> None:
    signals = [
        Signal("feature", "x", "numeric"),
        Signal("feature", "c", "categorical"),
        Signal("prediction", "prediction", "numeric"),
    ]
    rng = np.random.default_rng(5)
    columns = {
        "feature:x": rng.normal(size=500),
        "feature:c": rng.choice(np.array(["u", "v"], dtype=object), 500),
        "prediction:prediction": rng.uniform(size=500),
    }
    profile = build_profile(
        Lineage("m", "v1", run_id="r7", rows=500, source="train.csv"), signals, columns, bins=10
    )
    again = Profile.from_json(profile.to_json(), signals)
    assert again.lineage == profile.lineage
    assert again.lineage.created_at
    for key, ref in profile.numeric.items():
        assert np.array_equal(again.numeric[key].grid, ref.grid)
        assert np.array_equal(again.numeric[key].counts, ref.counts)
    assert again.categorical["feature:c"].categories == profile.categorical["feature:c"].categories
    with pytest.raises(ValueError, match="categorical in the profile"):
        Profile.from_json(profile.to_json(), [Signal("feature", "c", "numeric")])
    with pytest.raises(ValueError, match=r"not a streamwatch\.reference"):
        Profile.from_json({"format": "x"}, signals)


def test_ks_of_normal_scores_against_the_normal() -> None:
    rng = np.random.default_rng(6)
    ref = NumericReference.from_sample(rng.exponential(size=50_000), bins=20)
    assert ref is not None
    z = ref.normal_scores(rng.exponential(size=5_000), uniforms(np.arange(5_000)))
    assert stats.kstest(z, "norm").statistic < 0.03


def test_uniforms_are_uniform_and_deterministic() -> None:
    u = uniforms(np.arange(100_000))
    assert stats.kstest(u, "uniform").statistic < 0.01
    assert np.array_equal(u, uniforms(np.arange(100_000)))
    assert u.min() >= 0.0
    assert u.max() < 1.0


def test_coding_a_long_category_costs_memory_in_the_events_not_in_the_string() -> None:
    """A 900,000-character category once made a batch cost gigabytes (a fixed-width numpy
    string array as wide as the longest value, times the events)."""
    import tracemalloc

    from streamwatch.reference import CategoricalReference

    reference = CategoricalReference.from_sample(np.array(["DE", "FR", None], dtype=object))
    values = np.array(["DE"] * 9_999 + ["x" * 900_000], dtype=object)
    tracemalloc.start()
    codes = reference.codes(values)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000  # under 1 MB for 10,000 events; the old coding took ~36 GB
    assert codes.tolist() == [0] * 9_999 + [len(reference.categories)]
