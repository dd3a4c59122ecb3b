"""Quality scores against scikit-learn on the same data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn import metrics

from streamwatch.scores import (
    Counts,
    Groups,
    auc_error_bound,
    binary_counts,
    binary_counts_by,
    binary_scores,
    estimated_counts,
    estimated_counts_by,
    estimated_multiclass_counts,
    estimated_multiclass_counts_by,
    estimated_scores,
    multiclass_counts,
    multiclass_counts_by,
    multiclass_probability_counts,
    multiclass_probability_counts_by,
    multiclass_scores,
    regression_counts,
    regression_counts_by,
    regression_scores,
)

probabilities = hnp.arrays(np.float64, st.integers(2, 300), elements=st.floats(0, 1))


@given(probabilities, st.data())
def test_binary_scores_equal_scikit_learn(scores: np.ndarray, data: st.DataObject) -> None:
    y = data.draw(hnp.arrays(bool, len(scores)))
    ours = binary_scores(binary_counts(scores, y, 0.5))
    predicted = scores >= 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(y, predicted))
        assert ours["precision"] == pytest.approx(
            metrics.precision_score(y, predicted, zero_division=0)
        )
        assert ours["recall"] == pytest.approx(metrics.recall_score(y, predicted, zero_division=0))
        assert ours["f1"] == pytest.approx(metrics.f1_score(y, predicted, zero_division=0))
        assert ours["brier"] == pytest.approx(metrics.brier_score_loss(y, scores))
        clipped = np.clip(scores, 1e-15, 1 - 1e-15)
        assert ours["log_loss"] == pytest.approx(
            metrics.log_loss(y, clipped, labels=[False, True]), rel=1e-9
        )
    if y.all() or not y.any():
        assert np.isnan(ours["roc_auc"])
    else:
        counts = binary_counts(scores, y, 0.5)
        bound = auc_error_bound(counts.get("hist_pos"), counts.get("hist_neg"))
        assert abs(ours["roc_auc"] - metrics.roc_auc_score(y, scores)) <= bound + 1e-12


def test_auc_is_close_on_a_realistic_model() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(20_000) < 0.3
    scores = 1 / (1 + np.exp(-(rng.normal(size=20_000) + 1.5 * y - 1)))
    counts = binary_counts(scores, y, 0.5)
    assert abs(binary_scores(counts)["roc_auc"] - metrics.roc_auc_score(y, scores)) < 0.005
    assert auc_error_bound(counts.get("hist_pos"), counts.get("hist_neg")) < 0.02


def test_expected_calibration_error() -> None:
    scores = np.array([0.05, 0.15, 0.15, 0.95])
    y = np.array([False, True, False, True])
    # bins: [0,.1): 0.05 vs 0 -> 0.05; [.1,.2): 0.3 vs 1 -> 0.7; [.9,1): 0.95 vs 1 -> 0.05
    assert binary_scores(binary_counts(scores, y, 0.5))["ece"] == pytest.approx(0.8 / 4)


@given(hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-1e3, 1e3)), st.data())
def test_regression_scores_equal_scikit_learn(predictions: np.ndarray, data: st.DataObject) -> None:
    labels = data.draw(hnp.arrays(np.float64, len(predictions), elements=st.floats(-1e3, 1e3)))
    ours = regression_scores(regression_counts(predictions, labels))
    assert ours["mae"] == pytest.approx(metrics.mean_absolute_error(labels, predictions))
    assert ours["rmse"] == pytest.approx(
        np.sqrt(metrics.mean_squared_error(labels, predictions)), abs=1e-9
    )
    assert ours["bias"] == pytest.approx(np.mean(predictions - labels), abs=1e-9)


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=200))
def test_multiclass_scores_equal_scikit_learn(pairs: list[tuple[int, int]]) -> None:
    predicted = np.array([p for p, _ in pairs])
    actual = np.array([a for _, a in pairs])
    ours = multiclass_scores(multiclass_counts(predicted, actual, 5))
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(actual, predicted))
    for name, fn in (
        ("precision", metrics.precision_score),
        ("recall", metrics.recall_score),
        ("f1", metrics.f1_score),
    ):
        assert ours[name] == pytest.approx(
            fn(actual, predicted, average="macro", zero_division=0)
        ), name


@given(st.integers(2, 6), st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_multiclass_probability_scores_equal_scikit_learn(k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.full(k, 0.7), n)
    actual = rng.integers(0, k, n)
    predicted = probabilities.argmax(axis=1)
    counts = multiclass_counts(predicted, actual, 8) + multiclass_probability_counts(
        probabilities, predicted, actual
    )
    ours = multiclass_scores(counts)
    clipped = np.clip(probabilities, 1e-15, 1 - 1e-15)
    onehot = np.eye(k)[actual]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ours["log_loss"] == pytest.approx(
            metrics.log_loss(actual, clipped, labels=list(range(k))), rel=1e-6
        )
    # Brier's original multiclass score: the squared error summed over classes
    assert ours["brier"] == pytest.approx(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))
    per_class, bounds = [], []
    for c in range(k):
        y = actual == c
        if y.any() and not y.all():
            per_class.append(metrics.roc_auc_score(y, probabilities[:, c]))
            single = binary_counts(probabilities[:, c], y, 0.5)
            bounds.append(auc_error_bound(single.get("hist_pos"), single.get("hist_neg")))
    if per_class:
        assert abs(ours["roc_auc"] - np.mean(per_class)) <= np.mean(bounds) + 1e-9
    else:
        assert "roc_auc" not in ours or np.isnan(ours["roc_auc"])
    confidence = probabilities.max(axis=1)
    right = predicted == actual
    bins = np.minimum((confidence * 10).astype(int), 9)
    ece = sum(abs(confidence[bins == b].sum() - right[bins == b].sum()) for b in range(10)) / n
    assert ours["ece"] == pytest.approx(ece)


def test_multiclass_estimate_matches_reality_on_calibrated_probabilities() -> None:
    rng = np.random.default_rng(5)
    probabilities = rng.dirichlet([2.0, 1.0, 0.5], 100_000)
    actual = (rng.random(100_000)[:, None] > probabilities.cumsum(axis=1)).sum(axis=1)
    predicted = probabilities.argmax(axis=1)
    realized = multiclass_scores(
        multiclass_counts(predicted, actual, 3)
        + multiclass_probability_counts(probabilities, predicted, actual)
    )
    estimated = multiclass_scores(estimated_multiclass_counts(probabilities, predicted, 3))
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert estimated[name] == pytest.approx(realized[name], abs=0.01), name


def test_windows_add_and_subtract_counts_exactly() -> None:
    rng = np.random.default_rng(1)
    scores, y = rng.random(1000), rng.random(1000) < 0.4
    a, b = binary_counts(scores[:600], y[:600], 0.5), binary_counts(scores[600:], y[600:], 0.5)
    whole = binary_counts(scores, y, 0.5)
    assert binary_scores(a + b) == pytest.approx(binary_scores(whole))
    assert binary_scores(whole - a) == pytest.approx(binary_scores(b))


def test_estimate_matches_reality_on_calibrated_scores() -> None:
    rng = np.random.default_rng(2)
    scores = rng.beta(2, 5, 200_000)
    y = rng.random(200_000) < scores  # calibrated: P(y | score) = score
    realized = binary_scores(binary_counts(scores, y, 0.5))
    estimated = estimated_scores(estimated_counts(scores, scores, 0.5))
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert estimated[name] == pytest.approx(realized[name], abs=0.01), name


def _same(grouped: Counts, alone: Counts) -> None:
    assert grouped.events == alone.events
    assert grouped.arrays.keys() == alone.arrays.keys()
    for name, value in alone.arrays.items():
        assert grouped.arrays[name].shape == value.shape, name
        np.testing.assert_allclose(grouped.arrays[name], value, rtol=1e-9, atol=1e-9)


@given(st.integers(1, 200), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_counts_by_group_equal_each_group_counted_alone(n: int, count: int, seed: int) -> None:
    """One pass over a batch's rows, by group (the windows' pieces), gives each group the
    counts it gets counted alone; a group with no rows gets zeros."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, count, n)
    groups = Groups(ids, count)
    scores, truth = rng.uniform(0, 1, n), rng.uniform(0, 1, n) < 0.3
    values, labels = rng.normal(size=n), rng.normal(size=n)
    predicted, actual = rng.integers(0, 4, n), rng.integers(0, 5, n)  # class 4 undeclared
    probabilities = rng.dirichlet(np.ones(4), n)
    grouped = [
        binary_counts_by(groups, scores, truth, 0.5),
        estimated_counts_by(groups, scores, scores[::-1].copy(), 0.5),
        regression_counts_by(groups, values, labels),
        multiclass_counts_by(groups, predicted, actual, 8),
        multiclass_probability_counts_by(groups, probabilities, predicted, actual),
        estimated_multiclass_counts_by(groups, probabilities, predicted, 8),
    ]
    for g in range(count):
        rows = np.flatnonzero(ids == g)
        alone = [
            binary_counts(scores[rows], truth[rows], 0.5),
            estimated_counts(scores[rows], scores[::-1][rows], 0.5),
            regression_counts(values[rows], labels[rows]),
            multiclass_counts(predicted[rows], actual[rows], 8),
            multiclass_probability_counts(probabilities[rows], predicted[rows], actual[rows]),
            estimated_multiclass_counts(probabilities[rows], predicted[rows], 8),
        ]
        for by_group, counted in zip(grouped, alone, strict=True):
            _same(by_group[g], counted)
