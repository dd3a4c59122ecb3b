"""Monitor: applies decoded micro-batches to the references, windows and drift detectors.

State is split by ownership so that it can be checkpointed and moved on a rebalance:

* references are per model version (shared by every partition: one set of bin edges);
* windows are per ``(predictions partition, model, model version)``: additive counts, created
  on first use and dropped when the partition is revoked;
* alarm counters are per worker and only ever grow (they are Prometheus counters).

Scores are computed on the sum of the owned partitions' windows after each batch.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from streamwatch.config import DriftSettings, ModelSpec, Settings
from streamwatch.decode import Prediction
from streamwatch.detectors import CountWindow, FloatArray, IntArray, bin_counts, psi, quantile_edges

VersionKey = tuple[str, str]  # (model, model_version)


@dataclass(frozen=True)
class Alarm:
    model: str
    model_version: str
    feature: str
    event_time: float  # newest event time of the batch that raised it


@dataclass
class Reference:
    """A model version's reference: warm-up rows until full, then bin edges and counts."""

    features: tuple[str, ...]
    warmup_events: int
    bins: int
    _rows: list[FloatArray] = field(default_factory=list)
    filled: int = 0
    edges: list[FloatArray] | None = None
    counts: IntArray | None = None

    @property
    def ready(self) -> bool:
        return self.edges is not None

    @property
    def width(self) -> int:
        return self.bins + 1  # up to `bins` value bins, plus one for missing values

    def absorb(self, values: FloatArray) -> FloatArray:
        """Take what the warm-up still needs from a batch; return the rest."""
        take = min(self.warmup_events - self.filled, len(values))
        self._rows.append(values[:take])
        self.filled += take
        if self.filled >= self.warmup_events:
            sample = np.concatenate(self._rows)
            self._rows = []
            self.edges = quantile_edges(sample, self.bins)
            self.counts = bin_counts(sample, self.edges, self.width)
        return values[take:]


@dataclass(frozen=True)
class FeatureScore:
    model: str
    model_version: str
    feature: str
    psi: float


@dataclass(frozen=True)
class MonitorSnapshot:
    """What the exporter reads: a copy, taken under the monitor's lock."""

    window_events: int
    psi_threshold: float
    scores: list[FeatureScore]
    warmup_ratio: dict[VersionKey, float]
    alarms: dict[tuple[str, str, str], int]
    last_alarm_seconds: dict[tuple[str, str, str], float]


class Monitor:
    """Drift monitoring for every configured model, fed one micro-batch at a time."""

    def __init__(self, settings: Settings) -> None:
        self.drift: DriftSettings = settings.drift
        self.models: dict[str, ModelSpec] = {m.name: m for m in settings.models}
        self.references: dict[VersionKey, Reference] = {}
        self.windows: dict[int, dict[VersionKey, CountWindow]] = {}
        self._scores: dict[VersionKey, FloatArray] = {}
        self._above: dict[VersionKey, np.ndarray] = {}
        self.alarms: dict[tuple[str, str, str], int] = defaultdict(int)
        self.last_alarm_seconds: dict[tuple[str, str, str], float] = {}
        self.alarm_log: deque[Alarm] = deque(maxlen=1000)  # the latest alarms, for logs
        self._lock = threading.Lock()

    # -- partition ownership ------------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for p in partitions:
                self.windows.setdefault(p, {})

    def revoke(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for p in partitions:
                self.windows.pop(p, None)
            self._rescore(set(self._scores))

    # -- the batch ----------------------------------------------------------------------
    def apply(self, predictions: list[Prediction]) -> list[Alarm]:
        """Update with a batch; return the alarms it raised as (model, version, feature, time)."""
        groups: dict[tuple[str, str, int], list[Prediction]] = defaultdict(list)
        for p in predictions:
            groups[(p.model, p.model_version, p.partition)].append(p)
        with self._lock:
            touched: set[VersionKey] = set()
            newest: dict[VersionKey, float] = {}
            for (model, version, partition), group in groups.items():
                key = (model, version)
                if self._update(key, partition, group):
                    touched.add(key)
                    newest[key] = max(newest.get(key, 0.0), max(p.timestamp for p in group))
            return self._rescore(touched, newest)

    def _update(self, key: VersionKey, partition: int, group: list[Prediction]) -> bool:
        spec = self.models[key[0]]
        names = spec.numeric_features
        if not names:
            return False
        values = np.array([tuple(map(p.features.get, names)) for p in group], dtype=np.float64)
        reference = self.references.get(key)
        if reference is None:
            reference = Reference(tuple(names), spec.reference.warmup_events, self.drift.bins)
            self.references[key] = reference
        if not reference.ready:
            values = reference.absorb(values)
        if not len(values) or reference.edges is None:
            return False
        counts = bin_counts(values, reference.edges, reference.width)
        windows = self.windows.setdefault(partition, {})
        window = windows.get(key)
        if window is None:
            window = windows[key] = CountWindow(self.drift.window_events, np.zeros_like(counts))
        window.add(counts, len(values))
        return True

    def _rescore(
        self, keys: set[VersionKey], newest: dict[VersionKey, float] | None = None
    ) -> list[Alarm]:
        raised = []
        for key in keys:
            reference = self.references[key]
            owned = [w[key] for w in self.windows.values() if key in w]
            events = sum(w.events for w in owned)
            if reference.counts is None or events < self.drift.window_events:
                self._scores.pop(key, None)
                continue
            live = np.sum([w.counts for w in owned], axis=0)
            scores = psi(reference.counts, live)
            self._scores[key] = scores
            if newest is None or key not in newest:
                continue
            above = scores > self.drift.psi_threshold
            was = self._above.get(key, np.zeros_like(above))
            for j in np.flatnonzero(above & ~was):  # edge-triggered: one alarm per crossing
                feature = (key[0], key[1], reference.features[j])
                self.alarms[feature] += 1
                self.last_alarm_seconds[feature] = newest[key]
                raised.append(Alarm(*feature, newest[key]))
            self._above[key] = above
        self.alarm_log.extend(raised)
        return raised

    def snapshot(self) -> MonitorSnapshot:
        with self._lock:
            scores = [
                FeatureScore(model, version, name, float(value))
                for (model, version), values in self._scores.items()
                for name, value in zip(
                    self.references[(model, version)].features, values, strict=True
                )
                if np.isfinite(value)  # never export NaN: it would silently never page
            ]
            warmup = {k: min(1.0, r.filled / r.warmup_events) for k, r in self.references.items()}
            return MonitorSnapshot(
                self.drift.window_events,
                self.drift.psi_threshold,
                scores,
                warmup,
                dict(self.alarms),
                dict(self.last_alarm_seconds),
            )
