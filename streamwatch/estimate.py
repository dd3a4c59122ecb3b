"""Estimate: the scores expected before labels arrive (confidence-based performance
estimation, CBPE), from the predicted probabilities.

A binary model's scores go through its version's calibration map (from the profile's
labelled rows) when it has one; a multiclass model's class probabilities are taken as they
are. The estimate's counts of labelled events travel beside the realized counts, prefixed
``est_``, so that ``streamwatch_estimated_score_error`` compares the two on the same events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from streamwatch.config import ModelSpec, QualitySettings
from streamwatch.records import Prediction
from streamwatch.reference import Profile
from streamwatch.scores import (
    Counts,
    Groups,
    estimated_counts_by,
    estimated_multiclass_counts_by,
)
from streamwatch.statistics import FloatArray, IntArray

MAX_CLASSES = 100  # multiclass: classes tracked per model; the rest share the last code


class Estimator:
    """The estimated counts of stored predictions, per model."""

    def __init__(
        self,
        settings: QualitySettings,
        specs: Mapping[str, ModelSpec],
        profiles: Mapping[tuple[str, str], Profile],
    ) -> None:
        self.settings = settings
        self.specs = specs
        self.profiles = profiles

    def of(
        self, name: str, versions: list[str], columns: dict[str, Any], kept: IntArray
    ) -> tuple[IntArray, Callable[[IntArray, Groups], list[Counts]], FloatArray] | None:
        """The stored predictions' expected counts (CBPE): which of the ``kept`` rows have
        an estimate, a function from row numbers among those (and their groups) to their
        counts per group, and their probabilities of being wrong."""
        spec = self.specs[name]
        if spec.task == "binary":
            scores = columns["value"][kept].astype(np.float64)
            calibrated = self.calibrated(name, versions, scores)
            threshold = self.settings.threshold

            def binary(rows: IntArray, groups: Groups) -> list[Counts]:
                return estimated_counts_by(groups, scores[rows], calibrated[rows], threshold)

            wrong = np.where(scores >= threshold, 1.0 - calibrated, calibrated)
            return np.arange(len(kept)), binary, np.nan_to_num(wrong, nan=0.0)
        probabilities = stacked(columns, len(spec.classes), kept)  # multiclass with classes
        if probabilities is not None:
            scored = np.flatnonzero(~np.isnan(probabilities[:, 0]))
            predicted = columns["value"][kept][scored].astype(np.int64)
            probabilities = probabilities[scored]

            def multiclass(rows: IntArray, groups: Groups) -> list[Counts]:
                return estimated_multiclass_counts_by(
                    groups, probabilities[rows], predicted[rows], MAX_CLASSES
                )

            # the predicted class's probability (the top one for a class not declared)
            declared = predicted < probabilities.shape[1]
            top = probabilities.max(axis=1)
            top[declared] = probabilities[np.flatnonzero(declared), predicted[declared]]
            return scored, multiclass, np.clip(1.0 - top, 0.0, 1.0)
        return None

    def calibrated(self, model: str, versions: list[str], scores: FloatArray) -> FloatArray:
        """Scores through each version's calibration map from its labelled reference, or
        as they are (taken as calibrated probabilities) without one."""
        out = scores.astype(np.float64)
        for version in set(versions):
            profile = self.profiles.get((model, version))
            if profile is not None and profile.calibration is not None:
                rows = np.array([v == version for v in versions])
                out[rows] = profile.calibrate(out[rows])
        return out


def prefixed(counts: Counts) -> Counts:
    """The estimate's counts on labelled events, carried beside the realized counts."""
    arrays = {f"est_{k}": v for k, v in counts.arrays.items()}
    arrays["est_events"] = np.array([float(counts.events)])
    return Counts(0, arrays)


def unprefixed(counts: Counts) -> Counts:
    return Counts(
        int(counts.get("est_events")[0]),
        {k.removeprefix("est_"): v for k, v in counts.arrays.items() if k.startswith("est_")},
    )


def probability_columns(spec: ModelSpec, group: list[Prediction]) -> dict[str, Any]:
    """The pending store's columns ``p0``, ``p1``, ...: per declared class, each prediction's
    probability (NaN without scores; a class its scores leave out has probability 0)."""
    if not spec.classes:
        return {}
    missing = [np.nan] * len(spec.classes)
    rows = [[p.scores.get(c, 0.0) for c in spec.classes] if p.scores else missing for p in group]
    matrix = np.array(rows, dtype=np.float32).reshape(len(group), len(spec.classes))
    return {f"p{j}": matrix[:, j] for j in range(len(spec.classes))}


def stacked(columns: Mapping[str, Any], classes: int, rows: IntArray) -> FloatArray | None:
    """The rows' class probabilities (rows x classes) from ``p0``, ``p1``, ... columns."""
    if not classes:
        return None
    return np.column_stack([columns[f"p{j}"][rows] for j in range(classes)]).astype(np.float64)
