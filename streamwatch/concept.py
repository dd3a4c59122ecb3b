"""Concept: the quality alarms, sequential tests on a model version's and slice value's
outcomes, and on the estimate before labels.

Per key (an interned (model, version, slice)):

* on the labels: the error indicator (binary, multiclass) or the absolute error
  (regression), through a Bernoulli CUSUM bank under the false-alarm budget
  (:mod:`streamwatch.detectors.bernoulli`) or one of river's detectors (an option);
* on the estimate (per version only): errors drawn with their estimated probabilities,
  through the same bank, counted as ``detector="cusum_estimated"``.

The quality side (:mod:`streamwatch.quality`) joins, windows and scores; this module owns
the detectors and the alarm counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamwatch.config import ModelSpec, QualitySettings
from streamwatch.detectors.bernoulli import ConceptCusum, ExceedanceCusum
from streamwatch.detectors.river_detectors import river_detector
from streamwatch.records import ESTIMATED, ConceptAlarm, Label, Prediction, SegmentKey
from streamwatch.reference import Profile
from streamwatch.slices import ALL, OTHER
from streamwatch.statistics import FloatArray, IntArray

AlarmCount = tuple[str, str, str, str]  # model, version, slice, detector


class ConceptTests:
    """Every key's quality detectors, and how often each fired."""

    def __init__(self, settings: QualitySettings, profiles: dict[tuple[str, str], Profile]) -> None:
        self.settings = settings
        self.profiles = profiles
        self.detectors: dict[int, Any] = {}  # by key code, on the labels
        self.estimate_detectors: dict[int, ConceptCusum] = {}  # by key code, on the estimate
        self.alarms: dict[AlarmCount, int] = defaultdict(int)
        self.last_alarm: dict[AlarmCount, float] = {}
        self._estimate_alarms: list[ConceptAlarm] = []

    def reset(self) -> None:
        self.detectors.clear()
        self.estimate_detectors.clear()
        self.alarms.clear()
        self.last_alarm.clear()
        self._estimate_alarms = []

    def on_labels(
        self,
        key: int,
        segment: SegmentKey,
        spec: ModelSpec,
        errors: FloatArray,
        labels: Sequence[Label],
        rows: IntArray,
    ) -> list[ConceptAlarm]:
        """Test one key's outcomes, ``errors[rows]`` of ``labels[rows]`` (NaN: no outcome,
        skipped), in that order; return the alarms."""
        model, version, slice_name = segment
        if slice_name.endswith(OTHER):
            return []  # an overflow bucket mixes many segments: no concept detector
        name = (
            self.settings.regression_detector
            if spec.task == "regression"
            else self.settings.concept_detector
        )
        detector = self.detectors.get(key)
        if detector is None:
            detector = self.detectors[key] = self._detector(name, spec, version, slice_name)
            # the counter exists at 0 from the start, so that increase() sees the first alarm
            self.alarms.setdefault((model, version, slice_name, name), 0)
        if isinstance(detector, ConceptCusum | ExceedanceCusum):
            fired = detector.update(errors[rows])
        else:
            fired = []
            for i, error in enumerate(errors[rows].tolist()):
                if np.isnan(error):
                    continue
                detector.update(error if spec.task == "regression" else bool(error))
                if detector.drift_detected:
                    fired.append(i)
        return [
            self._count(
                ConceptAlarm(
                    model,
                    version,
                    slice_name,
                    name,
                    lb.timestamp,
                    lb.prediction_id,
                    lb.partition,
                    lb.offset,
                )
            )
            for lb in (labels[int(rows[i])] for i in fired)
        ]

    def on_estimate(
        self,
        spec: ModelSpec,
        codes: IntArray,
        names: Sequence[SegmentKey],
        drawn: FloatArray,
        predictions: Sequence[Prediction],
        index: IntArray,
    ) -> None:
        """The estimate before labels, tested as the labels are: a Bernoulli CUSUM bank per
        version (``codes``: version keys) on errors drawn with their estimated
        probabilities (row ``i`` is ``predictions[index[i]]``). Per version only: a slice
        value's test would start where the value starts being tracked, which moves with the
        batch boundaries, and so would its alarms. The alarms wait for
        :meth:`take_estimate_alarms`."""
        if self.settings.concept_detector != "cusum":
            return
        run_length = self.settings.false_alarm_budget_labels * (1 + len(spec.slices))
        for key in np.unique(codes).tolist():
            model, version, slice_name = names[key]
            detector = self.estimate_detectors.get(key)
            if detector is None:
                detector = self.estimate_detectors[key] = ConceptCusum(
                    self.settings.reference_labels,
                    run_length,
                    grow_to=self.settings.reference_labels_max,
                )
                self.alarms.setdefault((model, version, slice_name, ESTIMATED), 0)
            rows = np.flatnonzero(codes == key)
            for i in rows[detector.update(drawn[rows])].tolist():
                p = predictions[int(index[i])]
                alarm = ConceptAlarm(
                    model,
                    version,
                    slice_name,
                    ESTIMATED,
                    p.timestamp,
                    p.prediction_id,
                    p.partition,
                    p.offset,
                )
                self._estimate_alarms.append(self._count(alarm))

    def take_estimate_alarms(self) -> list[ConceptAlarm]:
        alarms, self._estimate_alarms = self._estimate_alarms, []
        return alarms

    def forget(self, code: int, segment: SegmentKey) -> None:
        """A retired key: its detectors and its alarm counts go."""
        self.detectors.pop(code, None)
        self.estimate_detectors.pop(code, None)
        for counted in [a for a in self.alarms if a[:3] == segment]:
            del self.alarms[counted]
            self.last_alarm.pop(counted, None)

    def _count(self, alarm: ConceptAlarm) -> ConceptAlarm:
        counted = (alarm.model, alarm.model_version, alarm.slice, alarm.detector)
        self.alarms[counted] += 1
        t = alarm.event_time
        self.last_alarm[counted] = max(self.last_alarm.get(counted, t), t)
        return alarm

    def _detector(self, name: str, spec: ModelSpec, version: str, slice_name: str) -> Any:
        """A new detector. The Bernoulli CUSUM's budget is the version's, split evenly over
        the version and its slice specs: the tracked values of one slice spec split its
        labels between them, so together they false-alarm at one stream's rate. Its
        reference is the version's profile's labelled data when that holds at least
        ``reference_labels`` labels (not for a slice: slices differ by nature), otherwise
        the stream's own first labels, which then grow with its later ones up to
        ``reference_labels_max`` (a profile's reference stays as it was measured)."""
        if name != "cusum":
            return river_detector(name)
        run_length = self.settings.false_alarm_budget_labels * (1 + len(spec.slices))
        if spec.task == "regression":
            return ExceedanceCusum(self.settings.reference_labels, run_length)
        profile = self.profiles.get((spec.name, version))
        if slice_name == ALL and profile is not None and profile.errors is not None:
            errors, labelled = profile.errors
            if labelled >= self.settings.reference_labels:
                return ConceptCusum(labelled, run_length, labelled, errors)
        return ConceptCusum(
            self.settings.reference_labels, run_length, grow_to=self.settings.reference_labels_max
        )
