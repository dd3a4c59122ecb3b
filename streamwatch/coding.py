"""Coding: a model version's predictions as columns, coded against its reference.

A :class:`Layout` says how a model's signals (its features, then its prediction) map to
numeric and categorical columns. A :class:`VersionState` holds a version's (or a drift
slice value's) reference: from a profile, or built from its first ``warmup_events`` events.
Against it a batch is coded once (:meth:`VersionState.code`: bin indexes, normal scores,
out-of-range flags, category codes) and summed into additive window tables
(:meth:`VersionState.table`), which the monitor's windows and detectors read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamwatch.config import ModelSpec
from streamwatch.records import Prediction, SegmentKey
from streamwatch.reference import Lineage, Profile, Signal, bin_index, build_profile, uniforms
from streamwatch.statistics import FloatArray, IntArray
from streamwatch.windows import Table


def signals_of(spec: ModelSpec) -> list[Signal]:
    """A model's monitored signals: its features, then its prediction."""
    out = [Signal("feature", f.name, f.type) for f in spec.features]
    out.append(
        Signal(
            "prediction", "prediction", "categorical" if spec.task == "multiclass" else "numeric"
        )
    )
    return out


class Layout:
    """How a model version's signals map to table columns."""

    def __init__(self, spec: ModelSpec, bins: int) -> None:
        self.spec = spec
        self.signals = signals_of(spec)
        self.numeric = [s for s in self.signals if s.type == "numeric"]
        self.categorical = [s for s in self.signals if s.type == "categorical"]
        self.numeric_features = [s.name for s in self.numeric if s.signal == "feature"]
        self.categorical_features = [s.name for s in self.categorical if s.signal == "feature"]
        self.features = [f.name for f in spec.features]
        self.width = bins + 1

    def columns(self, group: list[Prediction]) -> tuple[FloatArray, Any]:
        """Numeric values (events x numeric signals, NaN = missing) and categorical values
        (events x categorical signals, object; None = missing). One pass per event, in C."""
        n = len(group)
        values = np.empty((n, len(self.numeric)))
        if self.numeric_features:
            names = self.numeric_features
            values[:, : len(names)] = np.array(
                [tuple(map(p.features.get, names)) for p in group], dtype=np.float64
            ).reshape(n, len(names))
        cats = np.empty((n, len(self.categorical)), dtype=object)
        if self.categorical_features:
            names = self.categorical_features
            cats[:, : len(names)] = np.array(
                [tuple(map(p.features.get, names)) for p in group], dtype=object
            ).reshape(n, len(names))
        prediction = [p.prediction for p in group]
        if self.spec.task == "multiclass":
            cats[:, -1] = prediction
        else:
            values[:, -1] = prediction
        return values, cats


@dataclass
class Coded:
    """A batch's values, binned and coded once against a version's reference."""

    values: FloatArray
    z: FloatArray
    bins: IntArray  # (events, numeric) bin index, offset per signal for one bincount
    out_of_range: Any  # (events, numeric) bool
    categories: IntArray  # (events, categorical) code, offset per signal
    timestamps: FloatArray


class VersionState:
    """A model version's reference, worker-wide; warm-up until it has one."""

    def __init__(
        self, layout: Layout, key: SegmentKey, warmup: int, bins: int, profile: Profile | None
    ) -> None:
        self.layout = layout
        self.key = key
        self.warmup_events = warmup
        self.bins = bins
        self.profile = profile
        self._rows: list[tuple[FloatArray, Any]] = []
        self.filled = 0 if profile is None else warmup
        self.events = 0  # predictions seen, warm-up included

    @property
    def warmup_ratio(self) -> float:
        return 1.0 if self.profile is not None else self.filled / self.warmup_events

    def absorb(self, values: FloatArray, cats: Any) -> int:
        """Feed the warm-up; returns how many leading rows it took."""
        take = min(self.warmup_events - self.filled, len(values))
        self._rows.append((values[:take], cats[:take]))
        self.filled += take
        if self.filled >= self.warmup_events:
            numeric = np.concatenate([r[0] for r in self._rows])
            categorical = np.concatenate([r[1] for r in self._rows])
            columns = {s.key: numeric[:, i] for i, s in enumerate(self.layout.numeric)}
            columns |= {s.key: categorical[:, i] for i, s in enumerate(self.layout.categorical)}
            self.profile = build_profile(
                Lineage(*self.key[:2], rows=self.filled), self.layout.signals, columns, self.bins
            )
            self._rows = []
        return take

    def code(self, values: FloatArray, cats: Any, timestamps: FloatArray, keys: IntArray) -> Coded:
        assert self.profile is not None
        n = len(values)
        u = uniforms(keys)
        width = self.layout.width
        z = np.full(values.shape, np.nan)
        bins = np.empty(values.shape, dtype=np.int64)
        oor = np.zeros(values.shape, dtype=bool)
        for j, s in enumerate(self.layout.numeric):  # a loop over signals, not events
            ref = self.profile.numeric.get(s.key)
            column = values[:, j]
            if ref is None:
                bins[:, j] = width - 1 + j * width
                continue
            bins[:, j] = bin_index(column, ref.edges, width) + j * width
            z[:, j] = ref.normal_scores(column, u)
            oor[:, j] = (column < ref.minimum) | (column > ref.maximum)
        codes = np.empty((n, len(self.layout.categorical)), dtype=np.int64)
        offset = 0
        for j, s in enumerate(self.layout.categorical):
            cref = self.profile.categorical[s.key]
            codes[:, j] = cref.codes(cats[:, j]) + offset
            offset += cref.width
        return Coded(values, z, bins, oor, codes, timestamps)

    @property
    def category_width(self) -> int:
        assert self.profile is not None
        return sum(self.profile.categorical[s.key].width for s in self.layout.categorical)

    def empty_table(self) -> Table:
        return Table.zeros(
            len(self.layout.numeric),
            self.layout.width,
            self.category_width,
            len(self.layout.features),
        )

    def table(self, coded: Coded, rows: Any = slice(None)) -> Table:
        numeric = len(self.layout.numeric)
        values = coded.values[rows]
        present = ~np.isnan(values)
        width = self.layout.width
        return Table(
            events=len(values),
            bins=np.bincount(coded.bins[rows].ravel(), minlength=numeric * width).reshape(
                numeric, width
            ),
            sums=np.where(present, values, 0.0).sum(axis=0),
            present=present.sum(axis=0),
            out_of_range=coded.out_of_range[rows].sum(axis=0),
            categories=np.bincount(coded.categories[rows].ravel(), minlength=self.category_width),
            type_errors=np.zeros(len(self.layout.features), np.int64),
        )
