"""Monitor: the detection engine, fed one decoded micro-batch at a time.

Per segment (worker-wide): its signals (features and the prediction), its reference
profile (from a file, or built from its first ``warmup_events`` events) and lineage. A
segment is a model version (slice ``__all__``), or, for slices configured with
``drift: true``, one tracked value of the slice within a version, which warms up its own
reference from its own events, and its windows (additive count tables) and sequential
detectors. Segment state is shared by every partition the worker owns: the records come in
one order (:mod:`streamwatch.ordering`), so the same events give the same alarms whatever
the partition count.

A batch goes, per model version group::

    extract columns  ->  bin / normal scores / category codes (numpy, once per batch)
        -> windows: add one table per window (and per time bucket)
        -> detectors: CUSUM on normal scores, chi-square on codes, river on raw values
        -> alarms (counters, with the event that raised them)

Windowed statistics (PSI, KS, mean shift, JS, chi-square) are computed at snapshot time on
the segment's windows, and only when a window holds at least
``min_window_events``: otherwise the snapshot says why the score is absent.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamwatch.activity import Activity
from streamwatch.coding import Coded, Layout, VersionState
from streamwatch.config import Settings, WindowSpec
from streamwatch.detectors import Budget, CategoryBank, Chi2Bank, Crossing, CusumBank, RiverBank
from streamwatch.join import id_hash
from streamwatch.records import Alarm, AlarmKey, Prediction, Rejection, SegmentKey, VersionKey
from streamwatch.reference import Profile, Signal
from streamwatch.slices import ALL, OTHER, Slicer
from streamwatch.statistics import (
    FloatArray,
    IntArray,
    chi2_pvalue,
    jensen_shannon,
    ks_binned,
    mean_shift,
    psi,
)
from streamwatch.windows import CountWindow, Table, TimeWindow


@dataclass(frozen=True)
class Rows:
    """A segment's events as columns: id hashes, numeric and categorical values (as
    :meth:`Layout.columns` gives them) and event times. Made once per model version in a
    batch; each slice segment takes its rows."""

    hashes: IntArray
    values: FloatArray
    cats: Any
    timestamps: FloatArray

    def take(self, rows: list[int]) -> Rows:
        return Rows(self.hashes[rows], self.values[rows], self.cats[rows], self.timestamps[rows])

    def after(self, start: int) -> Rows:
        return Rows(
            self.hashes[start:], self.values[start:], self.cats[start:], self.timestamps[start:]
        )


@dataclass(frozen=True)
class Snapshot:
    """What the exporter and the replay timeline read: plain rows, copied under the lock."""

    # every row starts with the segment: model, model_version, slice
    scores: list[tuple[str, str, str, str, str, str, str, float]]  # signal, feature, stat, window
    undefined: list[tuple[str, str, str, str, str, str, str]]  # signal, feature, window, reason
    windows: list[tuple[str, str, str, str, int, float]]  # window, events, fill
    quality: list[tuple[str, str, str, str, str, float]]  # feature, check, ratio
    detector_ratio: list[tuple[str, str, str, str, str, str, float]]  # signal, feature, detector
    thresholds: list[tuple[str, str, str, str, float]]  # detector, value
    # model, version, reference, run id, data snapshot, code revision, environment
    model_info: list[tuple[str, str, str, str, str, str, str]]
    warmup: list[tuple[str, str, str, float]]
    alarms: dict[AlarmKey, int]
    last_alarm: dict[AlarmKey, float]
    predictions: list[tuple[str, str, int]] = field(default_factory=list)  # model, version
    reference_scores: list[tuple[str, str, str, float]] = field(default_factory=list)


@dataclass
class Detectors:
    """A segment's sequential detectors."""

    cusum: CusumBank | None
    cusum_columns: list[int]
    river: list[tuple[RiverBank, list[int]]]
    categorical: Chi2Bank | CategoryBank | None  # the categorical signals' test


@dataclass
class SegmentState:
    windows: list[CountWindow | TimeWindow]
    detectors: Detectors


class Monitor:
    """Drift and data quality for every configured model, one micro-batch at a time.

    ``slicers`` are the quality side's (which counts events in and picks the tracked slice
    values); without them the monitor keeps its own."""

    def __init__(
        self,
        settings: Settings,
        profiles: dict[VersionKey, Profile] | None = None,
        slicers: dict[str, Slicer] | None = None,
        activity: Activity | None = None,
    ) -> None:
        self.drift = settings.drift
        self.specs = {m.name: m for m in settings.models}
        self.layouts = {m.name: Layout(m, self.drift.bins) for m in settings.models}
        self.profiles = profiles or {}
        self.counts_slices = slicers is None
        self.slicers = slicers or {m.name: Slicer(m.slices) for m in settings.models}
        # per model: the slice specs (by index) with drift, and the segments a version can
        # have, which share its false-alarm budget
        self.drift_slices = {
            m.name: [i for i, s in enumerate(m.slices) if s.drift] for m in settings.models
        }
        self.segments = {
            m.name: 1 + sum(s.max_values for s in m.slices if s.drift) for m in settings.models
        }
        self.versions: dict[SegmentKey, VersionState] = {}
        self.states: dict[SegmentKey, SegmentState] = {}
        self.alarms: dict[AlarmKey, int] = defaultdict(int)
        self.last_alarm: dict[AlarmKey, float] = {}
        self.alarm_log: deque[Alarm] = deque(maxlen=10_000)  # the latest, for logs and demo
        # the quality side's clock when given (the pipeline retires both sides at once)
        self.owns_activity = activity is None
        self.activity = activity or Activity(settings.exporter.retire_after_seconds)
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget every segment (repartition: the versions moved to another worker, or
        are rebuilt here from the start)."""
        with self._lock:
            self.versions.clear()
            self.states.clear()
            self.alarms.clear()
            self.last_alarm.clear()
            self.alarm_log.clear()

    # -- the batch ----------------------------------------------------------------------
    def apply(
        self, predictions: list[Prediction], rejections: Iterable[Rejection] = ()
    ) -> list[Alarm]:
        """Update with a batch; return the alarms it raised."""
        groups: dict[tuple[str, str], list[Prediction]] = defaultdict(list)
        for p in predictions:
            groups[(p.model, p.model_version)].append(p)
        raised: list[Alarm] = []
        with self._lock:
            for (model, version), group in groups.items():
                if version == OTHER:
                    continue  # many versions mixed: no reference, no detectors
                # the tie-breaking uniforms of the normal scores are keyed by the event's id
                # (not its offset), so an event scores the same in any partition: hashed
                # once per event, for the version and every slice segment
                hashes = np.array([id_hash(p.prediction_id) for p in group], dtype=np.int64)
                # the columns too, once: every slice segment takes its rows of them
                values, cats = self.layouts[model].columns(group)
                rows = Rows(hashes, values, cats, np.array([p.timestamp for p in group]))
                raised += self._apply_group((model, version, ALL), group, rows)
                raised += self._apply_slices(model, version, group, rows)
                self.activity.saw((model, version), float(rows.timestamps.max()))
            self._retire_idle_versions()
            self._count_type_errors(rejections)
            for alarm in raised:
                self.alarms[alarm.key] += 1
                self.last_alarm[alarm.key] = max(
                    self.last_alarm.get(alarm.key, 0.0), alarm.event_time
                )
            self.alarm_log.extend(raised)
        return raised

    def forget_version(self, model: str, version: str) -> None:
        """Drop a model version's state and series (it lost its place among the tracked
        versions); if it comes back, it starts over."""
        with self._lock:
            self.activity.forget((model, version))
            self._forget(lambda segment: segment[:2] == (model, version))

    def retire(self, idle: list[VersionKey]) -> None:
        """Forget these idle model versions (the shared clock said so)."""
        gone = set(idle)
        with self._lock:
            self._forget(lambda segment: segment[:2] in gone)

    def _retire_idle_versions(self) -> None:
        """Forget idle model versions (:mod:`streamwatch.activity`): their series leave
        /metrics; if one comes back, it starts over (a new warm-up, or its profile)."""
        idle = set(self.activity.take_idle()) if self.owns_activity else set()
        if idle:
            self._forget(lambda segment: segment[:2] in idle)
        # slice values the quality side stopped tracking
        self._forget(
            lambda segment: (
                segment[2] != ALL and not self.slicers[segment[0]].is_tracked(segment[2])
            )
        )

    def _forget(self, retired: Callable[[SegmentKey], bool]) -> None:
        for key in [k for k in self.versions if retired(k)]:
            del self.versions[key]
            self.states.pop(key, None)
        for alarm in [a for a in self.alarms if retired(a[:3])]:
            del self.alarms[alarm]
            self.last_alarm.pop(alarm, None)

    def _apply_slices(
        self, model: str, version: str, group: list[Prediction], rows: Rows
    ) -> list[Alarm]:
        """The group's events again, per tracked value of each slice with drift."""
        specs = self.drift_slices[model]
        if not specs:
            return []
        slicer = self.slicers[model]
        if self.counts_slices:
            columns = slicer.columns(group)
            values = [columns[i] for i in specs]
        else:
            values = [slicer.column(i, group) for i in specs]
        raised: list[Alarm] = []
        for column in values:
            members: dict[str, list[int]] = defaultdict(list)
            for i, value in enumerate(column):
                members[value].append(i)
            for value, member_rows in members.items():
                if not value.endswith(OTHER):  # the overflow mixes segments: not watched
                    events = [group[i] for i in member_rows]
                    segment = (model, version, value)
                    raised += self._apply_group(segment, events, rows.take(member_rows))
        return raised

    def _version(self, key: SegmentKey) -> VersionState:
        state = self.versions.get(key)
        if state is None:
            spec = self.specs[key[0]]
            state = VersionState(
                self.layouts[key[0]],
                key,
                spec.reference.warmup_events,
                self.drift.bins,
                self.profiles.get(key[:2]) if key[2] == ALL else None,
            )
            self.versions[key] = state
            self._zero_alarms(state)
        return state

    def _zero_alarms(self, version: VersionState) -> None:
        """Every alarm counter of a segment exists at 0 from the segment's first event, so
        Prometheus scrapes the 0 during the warm-up: increase() sees no increase in a series
        whose first sample is already 1."""
        layout, (model, model_version, slice_name) = version.layout, version.key
        for signal in layout.numeric:
            choice = self.drift.detectors.get(signal.name, self.drift.detector)
            names = ("cusum_mean", "cusum_scale") if choice == "cusum" else (choice,)
            for name in names:
                key = (model, model_version, slice_name, signal.signal, signal.name, name)
                self.alarms.setdefault(key, 0)
        name = "chi2" if self.drift.categorical_detector == "chi2" else "cusum_category"
        for signal in layout.categorical:
            key = (model, model_version, slice_name, signal.signal, signal.name, name)
            self.alarms.setdefault(key, 0)

    def _apply_group(self, key: SegmentKey, group: list[Prediction], rows: Rows) -> list[Alarm]:
        """One segment's events (``group``, and ``rows``: their columns)."""
        version = self._version(key)
        version.events += len(group)
        if version.profile is None:
            taken = version.absorb(rows.values, rows.cats)
            group, rows = group[taken:], rows.after(taken)
            if not group:
                return []
        timestamps = rows.timestamps
        coded = version.code(rows.values, rows.cats, timestamps, rows.hashes)
        state = self._segment_state(version)
        for window in state.windows:
            if isinstance(window, CountWindow):
                window.add_rows(len(group), lambda rows: version.table(coded, rows))
                continue
            buckets = window.bucket_of(timestamps)
            newest = float(timestamps.max())
            for bucket in np.unique(buckets):
                window.add(int(bucket), version.table(coded, buckets == bucket), newest)
        return self._detect(version, state.detectors, coded, group)

    def _segment_state(self, version: VersionState) -> SegmentState:
        state = self.states.get(version.key)
        if state is None:
            empty = version.empty_table()
            windows: list[CountWindow | TimeWindow] = [
                CountWindow(w.events, empty) if w.events else TimeWindow(w.seconds or 0, empty)
                for w in self.drift.windows
            ]
            state = self.states[version.key] = SegmentState(windows, self._detectors(version))
        return state

    def _detectors(self, version: VersionState) -> Detectors:
        assert version.profile is not None
        layout = version.layout
        choice = [self.drift.detectors.get(s.name, self.drift.detector) for s in layout.numeric]
        cusum_columns = [j for j, c in enumerate(choice) if c == "cusum"]
        references = [version.profile.categorical[s.key].counts for s in layout.categorical]
        per_event = self.drift.categorical_detector == "cusum"
        budget = Budget(
            self.drift.false_alarm_budget_events * self.segments[version.key[0]],
            len(cusum_columns),
            CategoryBank.units(references) if per_event else len(references),
            tuple(self.drift.mean_shift_sigmas),
            tuple(self.drift.scale_ratio),
        )
        river = []
        for name in sorted(set(choice) - {"cusum"}):
            columns = [j for j, c in enumerate(choice) if c == name]
            river.append((RiverBank(name, len(columns)), columns))
        categorical: Chi2Bank | CategoryBank | None = None
        if layout.categorical and per_event:
            categorical = CategoryBank(references, budget.chart_run_length)
        elif layout.categorical:
            n = self.drift.categorical_test_events
            categorical = Chi2Bank(references, n, budget.chi2_alpha(n))
        cusum = budget.cusum_bank() if cusum_columns else None
        return Detectors(cusum, cusum_columns, river, categorical)

    def _detect(
        self, version: VersionState, detectors: Detectors, coded: Coded, group: list[Prediction]
    ) -> list[Alarm]:
        layout = version.layout
        found: list[tuple[Signal, Crossing]] = []
        if detectors.cusum is not None:
            columns = detectors.cusum_columns
            for c in detectors.cusum.update(coded.z[:, columns]):
                found.append((layout.numeric[columns[c.column]], c))
        for bank, columns in detectors.river:
            for c in bank.update(coded.values[:, columns]):
                found.append((layout.numeric[columns[c.column]], c))
        if detectors.categorical is not None:
            codes, offset = [], 0
            assert version.profile is not None
            for j, s in enumerate(layout.categorical):
                codes.append(coded.categories[:, j] - offset)
                offset += version.profile.categorical[s.key].width
            for c in detectors.categorical.update(codes):
                found.append((layout.categorical[c.column], c))
        model, model_version, slice_name = version.key
        return [
            Alarm(
                model,
                model_version,
                slice_name,
                s.signal,
                s.name,
                c.detector,
                c.statistic,
                c.threshold,
                group[c.row].timestamp,
                group[c.row].partition,
                group[c.row].offset,
            )
            for s, c in sorted(found, key=lambda f: f[1].row)
        ]

    def _count_type_errors(self, rejections: Iterable[Rejection]) -> None:
        for r in rejections:
            if r.feature is None or r.model is None or r.model_version is None:
                continue
            key = (r.model, r.model_version, ALL)
            version = self.versions.get(key)
            state = self.states.get(key)
            if version is None or state is None:
                continue  # before the reference exists there is no window to count in
            table = version.empty_table()
            table.type_errors[version.layout.features.index(r.feature)] = 1
            window = state.windows[0]  # the count window: data quality reads it
            assert isinstance(window, CountWindow)
            window.add(table)  # no events: it expires with the events around it

    # -- what the exporter reads ----------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The exporter's rows. Under the lock: the window totals (tables are replaced,
        never changed in place, so they can be read later) and the detectors' values;
        outside it, the statistics, so a scrape never holds up a batch for long and a batch
        never holds up a scrape."""
        deferred: list[tuple[VersionState, WindowSpec, Table, bool]] = []
        with self._lock:
            snap = Snapshot(
                [], [], [], [], [], [], [], [], dict(self.alarms), dict(self.last_alarm)
            )
            for key, version in self.versions.items():
                self._snapshot_version(key, version, snap, deferred)
        for version, spec, total, first in deferred:
            self._scores(version, spec, total, snap)
            if first:
                self._quality(version, total, snap)
        return snap

    def _snapshot_version(
        self,
        key: SegmentKey,
        version: VersionState,
        snap: Snapshot,
        deferred: list[tuple[VersionState, WindowSpec, Table, bool]],
    ) -> None:
        model, model_version, slice_name = key
        snap.warmup.append((*key, version.warmup_ratio))
        if slice_name == ALL:
            snap.predictions.append((model, model_version, version.events))
        layout = version.layout
        if version.profile is None:
            for s in layout.signals:
                for w in self.drift.windows:
                    snap.undefined.append((*key, s.signal, s.name, w.name, "warming_up"))
            return
        lineage = version.profile.lineage
        if slice_name == ALL:
            snap.model_info.append(
                (
                    model,
                    model_version,
                    lineage.source,
                    lineage.run_id,
                    lineage.data_snapshot,
                    lineage.code_revision,
                    lineage.environment_id,
                )
            )
            snap.reference_scores.extend(
                (model, model_version, score, value) for score, value in lineage.metrics.items()
            )
        owned = [self.states[key]] if key in self.states else []
        for w_index, spec in enumerate(self.drift.windows):
            windows = [state.windows[w_index] for state in owned]
            total = version.empty_table()
            for window in windows:
                total = total + window.total
            fill = max((window.fill for window in windows), default=0.0)
            snap.windows.append((*key, spec.name, total.events, fill))
            deferred.append((version, spec, total, w_index == 0))
        self._detector_values(version, owned, snap)

    def _scores(
        self, version: VersionState, spec: WindowSpec, total: Table, snap: Snapshot
    ) -> None:
        assert version.profile is not None
        layout = version.layout
        enough = total.events >= self.drift.min_window_events
        if layout.numeric:
            refs = [version.profile.numeric.get(s.key) for s in layout.numeric]
            width = layout.width
            ref_bins = np.array(
                [r.counts if r is not None else np.zeros(width, np.int64) for r in refs]
            )
            live = total.bins[:, :-1]
            stats = {
                "psi": psi(ref_bins[:, :-1], live),
                "ks": ks_binned(ref_bins[:, :-1], live),
                "mean_shift": mean_shift(
                    np.array([r.mean if r else np.nan for r in refs]),
                    np.array([np.sqrt(r.variance) if r else np.nan for r in refs]),
                    total.sums,
                    total.present.astype(np.float64),
                ),
            }
            for j, s in enumerate(layout.numeric):
                self._emit(
                    snap,
                    version,
                    s,
                    spec.name,
                    enough and refs[j] is not None,
                    total.present[j] > 0,
                    {n: v[j] for n, v in stats.items()},
                )
        offset = 0
        for s in layout.categorical:
            cref = version.profile.categorical[s.key]
            live_c = total.categories[offset : offset + cref.width][:-1]
            ref_c = cref.counts[:-1]
            offset += cref.width
            values = {
                "psi": float(psi(ref_c, live_c)),
                "js": float(jensen_shannon(ref_c, live_c)),
                "chi2_pvalue": float(chi2_pvalue(ref_c[None], live_c[None])[0]),
            }
            self._emit(snap, version, s, spec.name, enough, live_c.sum() > 0, values)

    @staticmethod
    def _emit(
        snap: Snapshot,
        version: VersionState,
        s: Signal,
        window: str,
        enough: bool,
        has_values: bool,
        values: dict[str, float],
    ) -> None:
        if not has_values:
            reason = "no_values"
        elif not enough:
            reason = "too_few_events"
        else:
            finite = {k: float(v) for k, v in values.items() if np.isfinite(v)}
            for statistic, value in finite.items():
                snap.scores.append((*version.key, s.signal, s.name, statistic, window, value))
            return
        snap.undefined.append((*version.key, s.signal, s.name, window, reason))

    def _quality(self, version: VersionState, total: Table, snap: Snapshot) -> None:
        assert version.profile is not None
        key = version.key
        layout = version.layout
        events = total.events
        if events == 0:
            return
        rejected = int(total.type_errors.sum())
        for j, s in enumerate(layout.numeric):
            if s.signal != "feature":
                continue
            snap.quality.append((*key, s.name, "missing", float(total.bins[j, -1] / events)))
            snap.quality.append(
                (
                    *key,
                    s.name,
                    "out_of_range",
                    float(total.out_of_range[j] / events),
                )
            )
        offset = 0
        for s in layout.categorical:
            width = version.profile.categorical[s.key].width
            counts = total.categories[offset : offset + width]
            offset += width
            if s.signal != "feature":
                continue
            snap.quality.append((*key, s.name, "missing", float(counts[-1] / events)))
            snap.quality.append((*key, s.name, "unseen_category", float(counts[-2] / events)))
        for i, name in enumerate(layout.features):
            snap.quality.append(
                (
                    *key,
                    name,
                    "type_error",
                    float(total.type_errors[i] / (events + rejected)),
                )
            )

    def _detector_values(
        self, version: VersionState, owned: list[SegmentState], snap: Snapshot
    ) -> None:
        key = version.key
        layout = version.layout
        banks = [state.detectors for state in owned]
        budget_bank = next((d.cusum for d in banks if d.cusum is not None), None)
        if budget_bank is not None:
            snap.thresholds.extend(
                [
                    (*key, "cusum_mean", budget_bank.threshold_of(0)),
                    (*key, "cusum_scale_up", budget_bank.threshold_of(2)),
                    (*key, "cusum_scale_down", budget_bank.threshold_of(3)),
                ]
            )
            values = np.max([d.cusum.values() for d in banks if d.cusum is not None], axis=0)
            columns = banks[0].cusum_columns
            for c, value in zip(columns, values, strict=True):
                s = layout.numeric[c]
                snap.detector_ratio.append((*key, s.signal, s.name, "cusum", float(value)))
        categorical = [d.categorical for d in banks if d.categorical is not None]
        if categorical and isinstance(categorical[0], Chi2Bank):
            snap.thresholds.append((*key, "chi2", categorical[0].alpha))
        elif categorical:  # the per-category banks' thresholds differ: the ratio only
            values = np.max([bank.values() for bank in categorical], axis=0)
            for s, value in zip(layout.categorical, values.tolist(), strict=True):
                snap.detector_ratio.append((*key, s.signal, s.name, "cusum_category", value))
