"""Scores: model quality from labelled pairs, and its estimate before the labels come.

Everything is an additive :class:`Counts` (confusion cells, sums of losses, score
histograms), so windows add a batch and subtract expired ones, and Prometheus counters can
carry the same numbers for exact global values across workers.

Multiclass models that declare their ``classes`` and send per-class probabilities also get
log loss, Brier score (summed over classes, range [0, 2]), macro one-vs-rest ROC AUC (each
class's AUC from its own histograms, same error bound, averaged over the classes that have
both positives and negatives) and top-label ECE (the predicted class's probability against
whether it was right).

ROC AUC comes from two 50-bin score histograms (positives, negatives): pairs in the same bin
count one half, so the error against the exact AUC is at most ``sum_i pos_i * neg_i /
(2 * P * N)`` (:func:`auc_error_bound`), under 0.01 for most models.

The estimate (confidence-based performance estimation, as NannyML's CBPE does in batch):
with calibrated probabilities ``p``, a prediction above the threshold is a true positive
with probability ``p`` and a false positive with ``1 - p``, and so on; summed over the
window's predictions these give the expected confusion matrix, and from it the expected
accuracy, precision, recall and F1. The expected AUC weighs each prediction's score bin by
``p`` (positive) and ``1 - p`` (negative). Multiclass: the predicted class is right with the
probability the model gives it, and class ``k`` is the actual one with probability ``p_k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwatch.statistics import FloatArray, IntArray

AUC_BINS = 50
ECE_BINS = 10
EPS = 1e-15  # probabilities are clipped to [EPS, 1 - EPS] in the log loss (as scikit-learn)


@dataclass
class Counts:
    """Additive counts: an event count and named arrays."""

    events: int = 0
    arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __add__(self, other: Counts) -> Counts:
        out = dict(self.arrays)  # arrays are never changed in place: shared, not copied
        for k, b in other.arrays.items():
            a = out.get(k)
            out[k] = b if a is None else a + b
        return Counts(self.events + other.events, out)

    def __sub__(self, other: Counts) -> Counts:
        out = dict(self.arrays)
        for k, b in other.arrays.items():
            a = out.get(k)
            out[k] = -b if a is None else a - b
        return Counts(self.events - other.events, out)

    def get(self, key: str) -> FloatArray:
        return np.asarray(self.arrays.get(key, np.zeros(1)), dtype=np.float64)


@dataclass(frozen=True)
class Groups:
    """Each row's group (``0 .. count - 1``): the counts of many groups (a batch's window
    pieces, its slices) in one pass over the rows, not one pass per group."""

    ids: IntArray
    count: int

    @classmethod
    def one(cls, rows: int) -> Groups:
        return cls(np.zeros(rows, dtype=np.int64), 1)

    def take(self, rows: IntArray) -> Groups:
        """The groups of a subset of the rows."""
        return Groups(self.ids[rows], self.count)

    def repeat(self, times: int) -> Groups:
        """Each row's group ``times`` times (for rows flattened from a matrix)."""
        return Groups(np.repeat(self.ids, times), self.count)

    def sizes(self) -> IntArray:
        return np.bincount(self.ids, minlength=self.count)

    def sums(self, *columns: npt.ArrayLike) -> FloatArray:
        """(groups, columns): each column summed per group."""
        return np.column_stack(
            [
                np.bincount(self.ids, weights=np.asarray(c, np.float64), minlength=self.count)
                for c in columns
            ]
        )

    def histogram(
        self, bins: IntArray, width: int, weights: FloatArray | None = None
    ) -> FloatArray:
        """(groups, width): per group, the rows (or their weights) in each bin."""
        flat = np.bincount(self.ids * width + bins, weights=weights, minlength=self.count * width)
        return flat.reshape(self.count, width).astype(np.float64)

    def split(
        self, arrays: dict[str, npt.NDArray[Any]], events: IntArray | None = None
    ) -> list[Counts]:
        """One :class:`Counts` per group from arrays with a leading group axis."""
        sizes = self.sizes() if events is None else events
        return [
            Counts(int(sizes[g]), {k: v[g] for k, v in arrays.items()}) for g in range(self.count)
        ]


def binary_counts(scores: FloatArray, positive: np.ndarray, threshold: float) -> Counts:
    """Counts of labelled binary pairs: probabilities and whether the label is positive."""
    return binary_counts_by(Groups.one(len(scores)), scores, positive, threshold)[0]


def binary_counts_by(
    groups: Groups, scores: FloatArray, positive: np.ndarray, threshold: float
) -> list[Counts]:
    """:func:`binary_counts` per group."""
    predicted = scores >= threshold
    y = positive.astype(np.float64)
    p = np.clip(scores, EPS, 1.0 - EPS)
    auc_bin = np.minimum((scores * AUC_BINS).astype(np.int64), AUC_BINS - 1)
    ece_bin = np.minimum((scores * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    return groups.split(
        {
            "cells": groups.sums(
                predicted & positive,
                predicted & ~positive,
                ~predicted & positive,
                ~predicted & ~positive,
            ),  # tp, fp, fn, tn
            "log_loss": groups.sums(-(y * np.log(p) + (1 - y) * np.log(1 - p))),
            "brier": groups.sums((scores - y) ** 2),
            "hist_pos": groups.histogram(auc_bin, AUC_BINS, y),
            "hist_neg": groups.histogram(auc_bin, AUC_BINS, 1 - y),
            "ece_n": groups.histogram(ece_bin, ECE_BINS),
            "ece_score": groups.histogram(ece_bin, ECE_BINS, scores),
            "ece_pos": groups.histogram(ece_bin, ECE_BINS, y),
        }
    )


def estimated_counts(scores: FloatArray, calibrated: FloatArray, threshold: float) -> Counts:
    """Expected counts of unlabelled binary predictions (CBPE)."""
    return estimated_counts_by(Groups.one(len(scores)), scores, calibrated, threshold)[0]


def estimated_counts_by(
    groups: Groups, scores: FloatArray, calibrated: FloatArray, threshold: float
) -> list[Counts]:
    """:func:`estimated_counts` per group."""
    predicted = scores >= threshold
    q = calibrated
    auc_bin = np.minimum((scores * AUC_BINS).astype(np.int64), AUC_BINS - 1)
    return groups.split(
        {
            "cells": groups.sums(
                q * predicted, (1 - q) * predicted, q * ~predicted, (1 - q) * ~predicted
            ),
            "hist_pos": groups.histogram(auc_bin, AUC_BINS, q),
            "hist_neg": groups.histogram(auc_bin, AUC_BINS, 1 - q),
        }
    )


def regression_counts(predictions: FloatArray, labels: FloatArray) -> Counts:
    return regression_counts_by(Groups.one(len(predictions)), predictions, labels)[0]


def regression_counts_by(
    groups: Groups, predictions: FloatArray, labels: FloatArray
) -> list[Counts]:
    """:func:`regression_counts` per group."""
    error = predictions - labels
    return groups.split(
        {
            "abs": groups.sums(np.abs(error)),
            "squared": groups.sums(error**2),
            "signed": groups.sums(error),
        }
    )


def multiclass_counts(predicted: np.ndarray, actual: np.ndarray, classes: int) -> Counts:
    """Codes of predicted and actual classes (0 .. classes - 1)."""
    return multiclass_counts_by(Groups.one(len(actual)), predicted, actual, classes)[0]


def multiclass_counts_by(
    groups: Groups, predicted: np.ndarray, actual: np.ndarray, classes: int
) -> list[Counts]:
    """:func:`multiclass_counts` per group."""
    right = predicted == actual
    hits, misses = groups.take(np.flatnonzero(right)), groups.take(np.flatnonzero(~right))
    return groups.split(
        {
            "correct": groups.sums(right),
            "tp": hits.histogram(actual[right], classes),
            "fp": misses.histogram(predicted[~right], classes),
            "fn": misses.histogram(actual[~right], classes),
        }
    )


def _bins(probabilities: FloatArray, bins: int) -> IntArray:
    return np.minimum((probabilities * bins).astype(np.int64), bins - 1)


def _class_histograms(
    groups: Groups, probabilities: FloatArray, truth: FloatArray
) -> dict[str, npt.NDArray[Any]]:
    """Per class, AUC_BINS-bin histograms of its probability, weighted by the chance that
    the class is (``hist_pos``) or is not (``hist_neg``) the actual one; flattened."""
    k = probabilities.shape[1]
    where = (_bins(probabilities, AUC_BINS) + np.arange(k) * AUC_BINS).ravel()
    cells = groups.repeat(k)
    return {
        "hist_pos": cells.histogram(where, k * AUC_BINS, truth.ravel()),
        "hist_neg": cells.histogram(where, k * AUC_BINS, 1 - truth.ravel()),
    }


def _probability_of(probabilities: FloatArray, codes: IntArray) -> FloatArray:
    """Each row's probability of its class code (0 for codes beyond the declared classes)."""
    k = probabilities.shape[1]
    inside = codes < k
    picked = probabilities[np.arange(len(codes)), np.minimum(codes, k - 1)]
    return np.where(inside, picked, 0.0)


def multiclass_probability_counts(
    probabilities: FloatArray, predicted: IntArray, actual: IntArray
) -> Counts:
    """Counts that need the per-class probabilities (events x declared classes)."""
    groups = Groups.one(len(probabilities))
    return multiclass_probability_counts_by(groups, probabilities, predicted, actual)[0]


def multiclass_probability_counts_by(
    groups: Groups, probabilities: FloatArray, predicted: IntArray, actual: IntArray
) -> list[Counts]:
    """:func:`multiclass_probability_counts` per group."""
    n, k = probabilities.shape
    truth = np.zeros((n, k))
    inside = actual < k
    truth[np.flatnonzero(inside), actual[inside]] = 1.0
    confidence = _probability_of(probabilities, predicted)
    right = (predicted == actual).astype(np.float64)
    ece_bin = _bins(confidence, ECE_BINS)
    return groups.split(
        {
            "scored": groups.sums(np.ones(n)),
            "log_loss": groups.sums(
                -np.log(np.clip(_probability_of(probabilities, actual), EPS, 1 - EPS))
            ),
            "brier": groups.sums(((probabilities - truth) ** 2).sum(axis=1)),
            **_class_histograms(groups, probabilities, truth),
            "ece_n": groups.histogram(ece_bin, ECE_BINS),
            "ece_score": groups.histogram(ece_bin, ECE_BINS, confidence),
            "ece_pos": groups.histogram(ece_bin, ECE_BINS, right),
        },
        events=np.zeros(groups.count, dtype=np.int64),  # added to multiclass_counts' events
    )


def estimated_multiclass_counts(
    probabilities: FloatArray, predicted: IntArray, classes: int
) -> Counts:
    """Expected counts of unlabelled multiclass predictions with probabilities (CBPE)."""
    groups = Groups.one(len(predicted))
    return estimated_multiclass_counts_by(groups, probabilities, predicted, classes)[0]


def estimated_multiclass_counts_by(
    groups: Groups, probabilities: FloatArray, predicted: IntArray, classes: int
) -> list[Counts]:
    """:func:`estimated_multiclass_counts` per group."""
    k = probabilities.shape[1]
    confidence = _probability_of(probabilities, predicted)
    tp = groups.histogram(predicted, classes, confidence)
    actual = np.zeros((groups.count, classes))
    actual[:, :k] = groups.sums(*probabilities.T) if k else 0.0
    return groups.split(
        {
            "correct": groups.sums(confidence),
            "tp": tp,
            "fp": groups.histogram(predicted, classes, 1 - confidence),
            "fn": actual - tp,
            **_class_histograms(groups, probabilities, probabilities),
        }
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0  # scikit-learn's zero_division=0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def auc(hist_pos: FloatArray, hist_neg: FloatArray) -> float:
    positives, negatives = hist_pos.sum(), hist_neg.sum()
    if positives <= 0 or negatives <= 0:
        return float("nan")
    below = np.cumsum(hist_neg) - hist_neg  # negatives in lower bins
    return float(np.sum(hist_pos * (below + 0.5 * hist_neg)) / (positives * negatives))


def auc_error_bound(hist_pos: FloatArray, hist_neg: FloatArray) -> float:
    return float(np.sum(hist_pos * hist_neg) / (2 * hist_pos.sum() * hist_neg.sum()))


def macro_auc(hist_pos: FloatArray, hist_neg: FloatArray) -> float:
    """One-vs-rest ROC AUC averaged over the classes with both positives and negatives."""
    per_class = [
        auc(pos, neg)
        for pos, neg in zip(
            hist_pos.reshape(-1, AUC_BINS), hist_neg.reshape(-1, AUC_BINS), strict=True
        )
    ]
    defined = [a for a in per_class if np.isfinite(a)]
    return float(np.mean(defined)) if defined else float("nan")


def _ece(c: Counts) -> float:
    gap = np.abs(c.get("ece_score") - c.get("ece_pos"))  # |sum of scores - positives| per bin
    return float(gap.sum() / max(c.get("ece_n").sum(), 1.0))


def confusion_scores(cells: FloatArray, n: float) -> dict[str, float]:
    tp, fp, fn, tn = (float(c) for c in cells)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "positive_rate": _ratio(tp + fp, n),
    }


def binary_scores(c: Counts) -> dict[str, float]:
    n = float(c.events)
    out = confusion_scores(c.get("cells"), n)
    out["log_loss"] = float(c.get("log_loss")[0] / n)
    out["brier"] = float(c.get("brier")[0] / n)
    out["roc_auc"] = auc(c.get("hist_pos"), c.get("hist_neg"))
    out["ece"] = _ece(c)
    return out


def estimated_scores(c: Counts) -> dict[str, float]:
    out = confusion_scores(c.get("cells"), float(c.events))
    out["roc_auc"] = auc(c.get("hist_pos"), c.get("hist_neg"))
    return out


def regression_scores(c: Counts) -> dict[str, float]:
    n = float(c.events)
    return {
        "mae": float(c.get("abs")[0] / n),
        "rmse": float(np.sqrt(c.get("squared")[0] / n)),
        "bias": float(c.get("signed")[0] / n),
    }


def multiclass_scores(c: Counts) -> dict[str, float]:
    """Accuracy and macro precision, recall and F1 over the classes seen; with per-class
    probabilities also log loss, Brier, macro ROC AUC and top-label ECE (over the events
    that had them), and ROC AUC alone for an estimate."""
    tp, fp, fn = c.get("tp"), c.get("fp"), c.get("fn")
    seen = (tp + fp + fn) > 0
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)[seen]
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)[seen]
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0
    )
    out = {
        "accuracy": float(c.get("correct")[0] / c.events),
        "precision": float(precision.mean()) if seen.any() else 0.0,
        "recall": float(recall.mean()) if seen.any() else 0.0,
        "f1": float(f1.mean()) if seen.any() else 0.0,
    }
    if "hist_pos" in c.arrays:
        out["roc_auc"] = macro_auc(c.get("hist_pos"), c.get("hist_neg"))
    scored = float(c.get("scored")[0])
    if scored > 0:
        out["log_loss"] = float(c.get("log_loss")[0] / scored)
        out["brier"] = float(c.get("brier")[0] / scored)
        out["ece"] = _ece(c)
    return out
