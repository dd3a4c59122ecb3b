"""Quality: labels joined to predictions, windowed scores per model version and slice,
concept drift on the error stream, and an estimate of the scores before labels arrive.

The join is per predictions partition (the labels topic is co-partitioned with it); the
windows, totals and detectors are per (model, version, slice), shared by every partition the
worker owns, and fed in one order (:mod:`streamwatch.ordering`)::

    predictions -> slices (bounded) -> pending store -> estimated counts (binary) -> windows
    labels -> join (first label wins; TTL; early hold) -> labelled counts -> windows, totals
                                                       -> sequential test on the errors

A label joins its prediction when it comes at most ``labels.ttl_seconds`` of event time
after it: decided per pair, so the answer does not depend on batch boundaries.

Every score comes from additive counts (:mod:`streamwatch.scores`). Time windows are keyed
by the prediction's event time, so a label that comes a day late lands in the window of its
prediction; the ``events`` window holds the last N labelled pairs in arrival order.
Per-worker cumulative counts back the exported counters: ``sum(rate(...))`` over workers
gives exact global values.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamwatch.activity import Activity
from streamwatch.concept import ConceptTests
from streamwatch.config import ModelSpec, QualitySettings, Settings, WindowSpec
from streamwatch.decode import is_positive
from streamwatch.estimate import (
    MAX_CLASSES,
    Estimator,
    prefixed,
    probability_columns,
    stacked,
    unprefixed,
)
from streamwatch.join import EarlyLabels, PendingPredictions, id_hash
from streamwatch.keys import Keys
from streamwatch.ordering import order_key
from streamwatch.records import ConceptAlarm, Label, Prediction, SegmentKey
from streamwatch.reference import Profile
from streamwatch.scores import (
    Counts,
    Groups,
    binary_counts_by,
    binary_scores,
    estimated_counts_by,
    estimated_multiclass_counts_by,
    estimated_scores,
    multiclass_counts_by,
    multiclass_probability_counts_by,
    multiclass_scores,
    regression_counts_by,
    regression_scores,
)
from streamwatch.slices import ALL, OTHER, Slicer
from streamwatch.statistics import FloatArray, IntArray
from streamwatch.windows import CountWindow, TimeWindow, TumblingWindow

SliceKey = SegmentKey
Window = CountWindow | TimeWindow | TumblingWindow
Windows = list[Window]
# joined pairs of one partition and model: their prediction's columns, times, labels
Matched = tuple[dict[str, Any], FloatArray, list[Label]]


@dataclass
class QualitySnapshot:
    scores: list[tuple[str, str, str, str, str, float]] = field(default_factory=list)
    estimated: list[tuple[str, str, str, str, str, float]] = field(default_factory=list)
    estimate_error: list[tuple[str, str, str, str, str, float]] = field(default_factory=list)
    totals: dict[SliceKey, Counts] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)
    class_names: dict[str, list[str]] = field(default_factory=dict)  # by code, per model
    pending: dict[str, int] = field(default_factory=dict)
    expired: dict[tuple[str, str], int] = field(default_factory=dict)
    joined: dict[tuple[str, str], int] = field(default_factory=dict)
    unmatched_labels: int = 0
    early_held: int = 0
    evicted_labels: int = 0
    duplicate_labels: int = 0
    duplicate_predictions: dict[str, int] = field(default_factory=dict)
    overflow: dict[tuple[str, str], int] = field(default_factory=dict)
    tracked: dict[tuple[str, str], int] = field(default_factory=dict)
    concept_alarms: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    concept_last_alarm: dict[tuple[str, str, str, str], float] = field(default_factory=dict)


def _new_window(spec: WindowSpec) -> Window:
    empty: Any = Counts()  # windows only need `events`, + and -
    if spec.events is not None:
        return CountWindow(spec.events, empty)
    if spec.tumbling:
        return TumblingWindow(spec.seconds or 0.0, empty)
    return TimeWindow(spec.seconds or 0.0, empty, buckets=12)


def _window_total(windows: list[Window]) -> Counts:
    """A window's counts (over the windows given); for a tumbling window, of the newest
    span closed."""
    tumbling = [w for w in windows if isinstance(w, TumblingWindow)]
    if tumbling:
        span = max(w.closed for w in tumbling)
        tables: list[Any] = [w.span(span) for w in tumbling]
    else:
        tables = [w.total for w in windows]
    total = Counts()
    for table in tables:
        total = total + table
    return total


@dataclass
class PartitionQuality:
    """One partition's join state."""

    pending: dict[str, PendingPredictions]
    early: EarlyLabels = field(default_factory=EarlyLabels)
    prediction_watermark: float = float("-inf")
    watermark_moved: float = field(default_factory=time.monotonic)  # wall clock
    label_watermark: float = float("-inf")


class Quality:
    """The label side of the engine, for every configured model."""

    def __init__(
        self,
        settings: Settings,
        profiles: dict[tuple[str, str], Profile] | None = None,
        activity: Activity | None = None,
    ) -> None:
        self.profiles = profiles or {}
        self.settings: QualitySettings = settings.quality
        self.ttl = settings.labels.ttl_seconds
        self.hold = settings.labels.early_hold_seconds
        self.hold_budget = settings.labels.early_hold_max_labels
        self.hold_idle = settings.labels.early_hold_idle_seconds
        self.clock: Callable[[], float] = time.monotonic  # wall clock of the idle release
        self.evicted_labels = 0  # released over the budget
        self.specs: dict[str, ModelSpec] = {m.name: m for m in settings.models}
        self.slicers = {m.name: Slicer(m.slices) for m in settings.models}
        # class -> code; declared classes first, so code j is probability column j
        self.classes: dict[str, dict[str, int]] = {
            m.name: {c: j for j, c in enumerate(m.classes)} for m in settings.models
        }
        self.keys = Keys()
        self.estimator = Estimator(self.settings, self.specs, self.profiles)
        self.partitions: dict[int, PartitionQuality] = {}
        # by key code: windows of labelled pairs, of estimates, and the concept detectors
        self.windows: dict[int, Windows] = {}
        self.estimates: dict[int, Windows] = {}
        self.concept = ConceptTests(self.settings, self.profiles)  # the quality alarms
        self.prediction_watermark = float("-inf")  # closes tumbling windows
        self.totals: dict[int, Counts] = {}
        self.expired: dict[tuple[str, str], int] = defaultdict(int)
        self.joined: dict[tuple[str, str], int] = defaultdict(int)
        self.unmatched_labels = 0
        self.duplicate_labels = 0
        self.duplicate_predictions: dict[str, int] = defaultdict(int)
        # One clock for the drift and the quality side (given: the pipeline retires idle
        # versions from both at once); without one, this side retires on its own.
        self.owns_activity = activity is None
        self.activity = activity or Activity(settings.exporter.retire_after_seconds)
        self._delays: list[tuple[str, float]] = []
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget everything but the configuration and the profiles (repartition: the
        versions moved to another worker, or are rebuilt here from the start). The slicer
        objects are replaced in the same dict, which the monitor shares."""
        with self._lock:
            for name, spec in self.specs.items():
                self.slicers[name] = Slicer(spec.slices)
                self.classes[name] = {c: j for j, c in enumerate(spec.classes)}
            self.keys = Keys()
            for table in (self.partitions, self.windows, self.estimates):
                table.clear()
            self.concept.reset()
            self.totals.clear()
            self.prediction_watermark = float("-inf")
            self.expired.clear()
            self.joined.clear()
            self.unmatched_labels = self.duplicate_labels = self.evicted_labels = 0
            self.duplicate_predictions.clear()
            self.activity.clear()
            self._delays = []

    @property
    def holding(self) -> int:
        """Labels held for a prediction that has not come (released by time: see
        ``labels.early_hold_idle_seconds``, so a batch must run while there are any)."""
        return sum(len(p.early) for p in self.partitions.values())

    # -- partition ownership ------------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for p in partitions:
                self._partition(p)

    def revoke(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for p in partitions:
                self.partitions.pop(p, None)

    def _partition(self, p: int) -> PartitionQuality:
        state = self.partitions.get(p)
        if state is None:
            pending = {}
            for name, spec in self.specs.items():
                # the score (binary, regression) or the predicted class code (multiclass)
                columns: dict[str, type] = {"value": np.float32}
                columns |= {f"key{i}": np.int32 for i in range(1 + len(spec.slices))}
                columns |= {f"p{j}": np.float32 for j in range(len(spec.classes))}
                pending[name] = PendingPredictions(columns)
            state = self.partitions[p] = PartitionQuality(pending)
        return state

    # -- the batch ----------------------------------------------------------------------
    def apply(self, predictions: list[Prediction], labels: list[Label]) -> list[ConceptAlarm]:
        """Store predictions, join labels, update windows; return concept-drift alarms.
        The join is per partition; every sequential step (slices, count windows, the
        concept detectors) sees the records in the order given, across partitions."""
        labels_of: dict[int, list[Label]] = defaultdict(list)
        for lb in labels:
            labels_of[lb.partition].append(lb)
        matches: dict[str, list[Matched]] = defaultdict(list)
        with self._lock:
            held = self._store(predictions)
            touched = {p.partition for p in predictions} | labels_of.keys()
            for partition in sorted(touched):
                state = self._partition(partition)
                self._join(state, held.get(partition, []) + labels_of.get(partition, []), matches)
                self._expire(state)
            alarms = self.concept.take_estimate_alarms() + self._score_in_order(matches)
            self._release_idle()
            self._enforce_hold_budget()
            self._retire_idle_versions()
            self._sweep_keys()
        return alarms

    def _score_in_order(self, matches: dict[str, list[Matched]]) -> list[ConceptAlarm]:
        """Score each model's joined pairs of every partition together, in label order."""
        alarms: list[ConceptAlarm] = []
        for name, parts in matches.items():
            found = [lb for _, _, part in parts for lb in part]
            order = np.array(
                sorted(range(len(found)), key=lambda i: order_key(found[i])), dtype=np.int64
            )
            columns = {
                c: np.concatenate([picked[c] for picked, _, _ in parts])[order] for c in parts[0][0]
            }
            times = np.concatenate([t for _, t, _ in parts])[order]
            alarms += self._score(name, columns, times, [found[i] for i in order.tolist()])
        return alarms

    def _sweep_keys(self) -> None:
        """Now and then, free the retired key codes no pending prediction carries."""
        if not self.keys.wants_sweep():
            return
        referenced: set[int] = set()
        for state in self.partitions.values():
            for name, store in state.pending.items():
                live = np.fromiter(store.slots.values(), dtype=np.int64, count=len(store))
                for j in range(1 + len(self.specs[name].slices)):
                    referenced.update(np.unique(store.columns[f"key{j}"][live]).tolist())
        self.keys.sweep(referenced)

    def _store(self, predictions: list[Prediction]) -> dict[int, list[Label]]:
        """Add predictions to their partitions' pending stores; the slices and the estimate
        windows see them in the order given. Returns the early labels now matched, per
        partition."""
        matched: dict[int, list[Label]] = defaultdict(list)
        by_model: dict[str, list[Prediction]] = defaultdict(list)
        for p in predictions:
            by_model[p.model].append(p)
        for name, group in by_model.items():
            spec = self.specs[name]
            versions = [p.model_version for p in group]
            key_columns = [self._codes(name, versions, [ALL] * len(group))]
            slicer = self.slicers[name]
            key_columns += [self._codes(name, versions, c) for c in slicer.columns(group)]
            for slice_name, value in slicer.take_retired():
                self._retire_slice(name, value, f"{slice_name}:{OTHER}")
            columns: dict[str, Any] = {f"key{j}": codes for j, codes in enumerate(key_columns)}
            if spec.task == "multiclass":
                columns["value"] = np.array(
                    [self._class(name, str(p.prediction)) for p in group], dtype=np.float32
                )
                columns |= probability_columns(spec, group)
            else:
                columns["value"] = np.array([float(p.prediction) for p in group])
            times = np.array([p.timestamp for p in group])
            self._saw(key_columns[0], times, prediction=True)
            keys = [id_hash(p.prediction_id) for p in group]
            partitions = np.array([p.partition for p in group])
            added = np.zeros(len(group), dtype=bool)
            for partition in np.unique(partitions).tolist():
                rows = np.flatnonzero(partitions == partition)
                state = self._partition(partition)
                added[rows] = state.pending[name].add_many(
                    [keys[i] for i in rows.tolist()],
                    times[rows],
                    {c: v[rows] for c, v in columns.items()},
                )
                if not added[rows].any():
                    continue
                newest = float(times[rows].max())
                if newest > state.prediction_watermark:
                    state.prediction_watermark = newest
                    state.watermark_moved = self.clock()
                    self.prediction_watermark = max(self.prediction_watermark, newest)
                if state.early:  # labels that came first
                    for i in rows[added[rows]].tolist():
                        waiting = state.early.pop(keys[i], group[i].prediction_id)
                        if waiting is not None:
                            matched[partition].append(waiting)
            self.duplicate_predictions[name] += int((~added).sum())
            kept = np.flatnonzero(added)
            if not len(kept):
                continue
            estimate = self.estimator.of(name, [versions[i] for i in kept.tolist()], columns, kept)
            if estimate is not None:
                rows, counts, errors = estimate
                draws = np.array([keys[i] for i in kept[rows].tolist()], dtype=np.uint64)
                # an error with its estimated probability, drawn from the id's hash (a replay
                # draws the same): in control, exactly Bernoulli at the reference rate
                uniform = (draws >> np.uint64(7)) / 2.0**53  # the hash's top 53 of 60 bits
                drawn = (uniform < errors).astype(np.float64)
                for codes in key_columns:
                    self._update(
                        self.estimates,
                        codes[kept][rows],
                        times[kept][rows],
                        counts,
                        self.prediction_watermark,
                    )
                self.concept.on_estimate(
                    spec,
                    key_columns[0][kept][rows],
                    self.keys.names,
                    drawn,
                    group,
                    kept[rows],
                )
        return matched

    def _codes(self, model: str, versions: list[str], slices: list[str]) -> IntArray:
        """Key codes of (model, version, slice) per event, one dict lookup per distinct pair."""
        pairs: dict[tuple[str, str], int] = {}
        out = np.empty(len(versions), dtype=np.int64)
        for i, pair in enumerate(zip(versions, slices, strict=True)):
            code = pairs.get(pair)
            if code is None:
                code = pairs[pair] = self.keys.code((model, *pair))
            out[i] = code
        return out

    def _class(self, model: str, name: str) -> int:
        classes = self.classes[model]
        code = classes.get(name)
        if code is None:
            code = min(len(classes), MAX_CLASSES - 1)
            if code < MAX_CLASSES - 1:
                classes[name] = code
        return code

    def _update(
        self,
        table: dict[int, Windows],
        keys: IntArray,
        times: FloatArray,
        counts: Callable[[IntArray, Groups], list[Counts]],
        watermark: float,
    ) -> dict[int, tuple[IntArray, Counts]]:
        """Add each key's rows to its windows; return the rows per key, and their counts.
        Every piece a window takes (a count window's chunk, a time window's bucket) is
        counted in one pass over the batch. Tumbling windows close with the prediction
        ``watermark``, so the estimate and the realized scores of one span line up."""
        if not len(keys):
            return {}
        pieces: list[IntArray] = []  # the rows of each piece counted
        plan: list[tuple[int, IntArray, int, list[tuple[Window, int | None, int, float]]]] = []
        for key in np.unique(keys).tolist():
            rows = np.flatnonzero(keys == key)
            windows = table.get(key)
            if windows is None:
                windows = table[key] = [_new_window(w) for w in self.settings.windows]
            whole = len(pieces)
            pieces.append(rows)
            adds: list[tuple[Window, int | None, int, float]] = []
            for window in windows:
                if isinstance(window, CountWindow):
                    # a chunk at a time: a backlog's batch must not become one table
                    for part in window.pieces(len(rows)):
                        adds.append((window, None, len(pieces), 0.0))
                        pieces.append(rows[part])
                    continue
                buckets = window.bucket_of(times[rows])
                newest = float(times[rows].max())
                if isinstance(window, TumblingWindow):
                    newest = max(newest, watermark)
                distinct = np.unique(buckets).tolist()
                for bucket in distinct:
                    adds.append(
                        (window, bucket, len(pieces) if len(distinct) > 1 else whole, newest)
                    )
                    if len(distinct) > 1:
                        pieces.append(rows[buckets == bucket])
            plan.append((key, rows, whole, adds))
        ids = np.repeat(np.arange(len(pieces)), [len(rows) for rows in pieces])
        tables = counts(np.concatenate(pieces), Groups(ids, len(pieces)))
        groups: dict[int, tuple[IntArray, Counts]] = {}
        for key, rows, whole, adds in plan:
            for window, bucket, piece, newest in adds:
                if bucket is None:
                    window.add(tables[piece])  # type: ignore[call-arg, arg-type]
                else:
                    window.add(bucket, tables[piece], newest)  # type: ignore[call-arg, arg-type]
            groups[key] = (rows, tables[whole])
        return groups

    def _join(
        self, state: PartitionQuality, labels: list[Label], matches: dict[str, list[Matched]]
    ) -> None:
        """Find each label's prediction in the partition's store; add the pairs to
        ``matches`` (their prediction's columns, times and labels) for scoring."""
        if not labels:
            return
        state.label_watermark = max(state.label_watermark, max(lb.timestamp for lb in labels))
        keys = [id_hash(lb.prediction_id) for lb in labels]
        waiting = np.arange(len(labels))
        for name, store in state.pending.items():
            found, slots, times = store.take_many([keys[i] for i in waiting.tolist()])
            if found.any():
                rows = waiting[found]
                late = np.array([labels[i].timestamp for i in rows.tolist()]) - times > self.ttl
                if late.any():  # its prediction's time to wait was over: both go unjoined
                    for slot in slots[late].tolist():
                        model, version, _ = self.keys.names[int(store.columns["key0"][slot])]
                        self.expired[(model, version)] += 1
                    self.unmatched_labels += int(late.sum())
                    rows, slots, times = rows[~late], slots[~late], times[~late]
                if len(rows):
                    # copied now: the slots are reused by the next add
                    picked = {c: v[slots] for c, v in store.columns.items()}
                    matches[name].append((picked, times, [labels[i] for i in rows.tolist()]))
            waiting = waiting[~found]
            if not len(waiting):
                break
        for i in waiting.tolist():  # no prediction yet: hold the label for a while
            if keys[i] in state.early:
                self.duplicate_labels += 1  # the first label waiting for it wins
            else:
                state.early.hold(keys[i], labels[i])

    def _score(
        self, name: str, columns: dict[str, Any], times: FloatArray, found: list[Label]
    ) -> list[ConceptAlarm]:
        """Count and detect on joined pairs (their prediction's ``columns`` and event
        ``times``, and their labels), in the order given."""
        spec = self.specs[name]
        label_times = np.array([lb.timestamp for lb in found])
        labels = [lb.label for lb in found]
        keys = [self.keys.resolve(columns[f"key{j}"]) for j in range(1 + len(spec.slices))]
        self._delays.extend((name, d) for d in (label_times - times).tolist())
        for key, n in zip(*np.unique(keys[0], return_counts=True), strict=True):
            model, version, _ = self.keys.names[int(key)]
            self.joined[(model, version)] += int(n)
        self._saw(keys[0], label_times, prediction=False)
        threshold = self.settings.threshold
        if spec.task == "binary":
            scores = columns["value"].astype(np.float64)
            positive = np.array([is_positive(v, spec.positive_labels) for v in labels])
            errors = ((scores >= threshold) != positive).astype(np.float64)
            # the estimator the live estimate uses (calibrated by the version's profile),
            # so that streamwatch_estimated_score_error measures the exported estimate
            versions = [self.keys.names[int(k)][1] for k in keys[0].tolist()]
            calibrated = self.estimator.calibrated(name, versions, scores)

            def counts(rows: IntArray, groups: Groups) -> list[Counts]:
                real = binary_counts_by(groups, scores[rows], positive[rows], threshold)
                est = estimated_counts_by(groups, scores[rows], calibrated[rows], threshold)
                return [r + prefixed(e) for r, e in zip(real, est, strict=True)]
        elif spec.task == "regression":
            values = columns["value"].astype(np.float64)
            actual = np.array([float(v) if not isinstance(v, str) else np.nan for v in labels])
            errors = np.abs(values - actual)

            def counts(rows: IntArray, groups: Groups) -> list[Counts]:
                return regression_counts_by(groups, values[rows], actual[rows])
        else:
            predicted = columns["value"].astype(np.int64)
            actual_cls = np.array([self._class(name, _class_name(v)) for v in labels])
            errors = (predicted != actual_cls).astype(np.float64)
            probabilities = stacked(columns, len(spec.classes), np.arange(len(found)))

            def counts(rows: IntArray, groups: Groups) -> list[Counts]:
                out = multiclass_counts_by(groups, predicted[rows], actual_cls[rows], MAX_CLASSES)
                if probabilities is None:
                    return out
                has = np.flatnonzero(~np.isnan(probabilities[rows, 0]))
                if not len(has):
                    return out
                scored, by = rows[has], groups.take(has)
                p, k, a = probabilities[scored], predicted[scored], actual_cls[scored]
                extra = multiclass_probability_counts_by(by, p, k, a)
                est = estimated_multiclass_counts_by(by, p, k, MAX_CLASSES)
                sizes = by.sizes()  # a piece with no probabilities gets none of their counts
                return [
                    o + x + prefixed(e) if sizes[g] else o
                    for g, (o, x, e) in enumerate(zip(out, extra, est, strict=True))
                ]

        alarms = []
        for column in keys:
            updated = self._update(self.windows, column, times, counts, self.prediction_watermark)
            for key, (rows, whole) in updated.items():
                self.totals[key] = self.totals.get(key, Counts()) + whole
                segment = self.keys.names[key]
                alarms += self.concept.on_labels(key, segment, spec, errors, found, rows)
        return alarms

    def _expire(self, state: PartitionQuality) -> None:
        for _name, store in state.pending.items():
            for slot in store.expire(state.label_watermark - self.ttl).tolist():
                model, version, _ = self.keys.names[int(store.columns["key0"][slot])]
                self.expired[(model, version)] += 1
        self.unmatched_labels += state.early.release_before(state.prediction_watermark - self.hold)

    def _release_idle(self) -> None:
        """A partition whose predictions stopped would hold its early labels forever:
        after ``early_hold_idle_seconds`` of wall-clock time they are released."""
        now = self.clock()
        for state in self.partitions.values():
            if state.early and now - state.watermark_moved > self.hold_idle:
                self.unmatched_labels += state.early.release_all()
                state.watermark_moved = now

    def _enforce_hold_budget(self) -> None:
        """Over the budget, release the oldest held labels of the fullest partitions."""
        held = sum(len(s.early) for s in self.partitions.values())
        while held > self.hold_budget:
            fullest = max(self.partitions.values(), key=lambda s: len(s.early))
            released = fullest.early.release_oldest(held - self.hold_budget)
            self.unmatched_labels += released
            self.evicted_labels += released
            held -= released

    # -- retiring what went away ----------------------------------------------------------
    def _saw(self, version_codes: IntArray, times: FloatArray, prediction: bool) -> None:
        """Record the newest event time of each version among these rows (codes of the
        versions' ``__all__`` keys)."""
        for code in np.unique(version_codes).tolist():
            newest = float(times[version_codes == code].max())
            self.activity.saw(self.keys.names[code][:2], newest, prediction)

    def forget_version(self, model: str, version: str) -> None:
        """Drop a model version's windows and series (it lost its place among the tracked
        versions); its pending predictions then count under ``__other__``."""
        with self._lock:
            self.activity.forget((model, version))
            self._retire_version(model, version, (model, OTHER))

    def _retire_idle_versions(self) -> None:
        """Forget idle model versions (:mod:`streamwatch.activity`): their series leave
        /metrics. With a shared clock the pipeline does it (:meth:`retire`)."""
        if self.owns_activity:
            for model, version in self.activity.take_idle():
                self._retire_version(model, version, None)

    def retire(self, idle: list[tuple[str, str]]) -> None:
        """Forget these idle model versions (the shared clock said so)."""
        with self._lock:
            for model, version in idle:
                self._retire_version(model, version, None)
            self._sweep_keys()

    def _retire_version(self, model: str, version: str, successor: tuple[str, str] | None) -> None:
        for key, code in [(k, c) for k, c in self.keys.codes.items() if k[:2] == (model, version)]:
            self._forget(code, key if successor is None else (*successor, key[2]))
        self.expired.pop((model, version), None)
        self.joined.pop((model, version), None)

    def _retire_slice(self, model: str, value: str, other: str) -> None:
        """A slice value left the tracked set: its series go, its pending predictions will
        count under ``other``."""
        for key, code in list(self.keys.codes.items()):
            if key[0] == model and key[2] == value:
                self._forget(code, (model, key[1], other))

    def _forget(self, code: int, successor: SliceKey) -> None:
        self.concept.forget(code, self.keys.names[code])
        self.keys.retire(code, successor)
        self.windows.pop(code, None)
        self.estimates.pop(code, None)
        self.totals.pop(code, None)

    def take_label_delays(self) -> list[tuple[str, float]]:
        """(model, label time - prediction time) of the pairs joined since the last call."""
        with self._lock:
            delays, self._delays = self._delays, []
        return delays

    # -- what the exporter reads ----------------------------------------------------------
    def snapshot(self) -> QualitySnapshot:
        with self._lock:
            snap = QualitySnapshot(
                totals={self.keys.names[k]: c for k, c in self.totals.items()},
                tasks={n: s.task for n, s in self.specs.items()},
                class_names={n: _by_code(c) for n, c in self.classes.items()},
                pending={
                    n: sum(len(p.pending[n]) for p in self.partitions.values()) for n in self.specs
                },
                expired=dict(self.expired),
                joined=dict(self.joined),
                unmatched_labels=self.unmatched_labels,
                early_held=sum(len(p.early) for p in self.partitions.values()),
                evicted_labels=self.evicted_labels,
                duplicate_labels=self.duplicate_labels,
                duplicate_predictions=dict(self.duplicate_predictions),
                overflow={
                    (n, s.name): self.slicers[n].overflow[i]
                    for n, spec in self.specs.items()
                    for i, s in enumerate(spec.slices)
                },
                tracked={
                    (n, s.name): len(self.slicers[n].tracked[i])
                    for n, spec in self.specs.items()
                    for i, s in enumerate(spec.slices)
                },
                concept_alarms=dict(self.concept.alarms),
                concept_last_alarm=dict(self.concept.last_alarm),
            )
            # window totals under the lock (counts are replaced, never changed in place);
            # the scores from them outside it, so a scrape and a batch do not wait long
            totals = [
                (
                    key,
                    [
                        (
                            spec,
                            _window_total([self.windows[code][w]] if code in self.windows else []),
                            _window_total(
                                [self.estimates[code][w]] if code in self.estimates else []
                            ),
                        )
                        for w, spec in enumerate(self.settings.windows)
                    ],
                )
                for key, code in self.keys.codes.items()  # live keys only
            ]
        for key, windows in totals:
            self._window_scores(key, windows, snap)
        return snap

    def _window_scores(
        self, key: SliceKey, windows: list[tuple[WindowSpec, Counts, Counts]], snap: QualitySnapshot
    ) -> None:
        task = self.specs[key[0]].task
        minimum = self.settings.min_window_events
        for spec, total, estimate in windows:
            if total.events >= minimum:
                realized = _scores(task, total)
                snap.scores += [
                    (*key, n, spec.name, v) for n, v in realized.items() if np.isfinite(v)
                ]
                labelled_estimate = unprefixed(total)
                if labelled_estimate.events >= minimum:
                    on_labelled = _estimated_scores(task, labelled_estimate)
                    snap.estimate_error += [
                        (*key, n, spec.name, on_labelled[n] - realized[n])
                        for n in on_labelled
                        if np.isfinite(on_labelled[n] - realized[n])
                    ]
            if estimate.events >= minimum:
                snap.estimated += [
                    (*key, n, spec.name, v)
                    for n, v in _estimated_scores(task, estimate).items()
                    if np.isfinite(v)
                ]


def _scores(task: str, counts: Counts) -> dict[str, float]:
    if task == "binary":
        return binary_scores(counts)
    if task == "regression":
        return regression_scores(counts)
    return multiclass_scores(counts)


def _by_code(classes: dict[str, int]) -> list[str]:
    names = ["__other__"] * MAX_CLASSES  # the last code is shared by classes past the cap
    for name, code in classes.items():
        names[code] = name
    return names[: max(classes.values(), default=-1) + 1]


def _estimated_scores(task: str, counts: Counts) -> dict[str, float]:
    return estimated_scores(counts) if task == "binary" else multiclass_scores(counts)


def _class_name(label: float | str) -> str:
    if isinstance(label, float) and label.is_integer():
        return str(int(label))
    return str(label)
