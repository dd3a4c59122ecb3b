"""Admission: the checks on decoded records that need state, between decode and the engine.

Decoding is pure; these checks remember what came before, so they live here:

- **Event time.** A record more than ``event_time.max_future_seconds`` ahead of the wall
  clock, or more than ``event_time.max_lateness_seconds`` behind its topic partition's
  watermark (the newest event time admitted there), is rejected as ``future_timestamp`` or
  ``late_timestamp``: dead-lettered and counted like a decode rejection, never clamped (a
  clamped event would land in a window it does not belong to). The future bound uses the
  wall clock because a bound derived from the data could be ratcheted forward by a producer;
  so one event from the year 9999 cannot empty the windows, retire live versions or expire
  held labels.
- **Model versions.** Per model at most ``max_versions`` versions are tracked: the most
  active ones (:class:`streamwatch.slices.HeavyHitters`, as for slices, without retirement
  by share). A version enters with ``VERSION_SHARE / max_versions`` of its model's recent
  traffic (0.01% for 10: a canary at 0.1% is tracked, a one-off version is not) while there
  is room, and displaces the least active tracked one only when 1.25 times as active. A
  prediction of any other version counts under the version ``__other__``, and
  in ``overflow``. A version that loses its place is listed by :meth:`take_displaced`, for
  the engine to forget.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace

from streamwatch.config import Settings
from streamwatch.records import Prediction
from streamwatch.slices import OTHER, HeavyHitters

#: Rejection reasons decided here (beside :data:`streamwatch.decode.REASONS`).
ADMISSION_REASONS = ("future_timestamp", "late_timestamp")
VERSION_SHARE = 1 / 1000  # over max_versions: the recent share a version needs to be tracked


class EventClock:
    """Per topic partition watermarks, and the event-time bounds a record must fit."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.max_future = settings.event_time.max_future_seconds
        self.max_lateness = settings.event_time.max_lateness_seconds
        self.clock = clock
        self.watermarks: dict[tuple[str, int], float] = {}
        # the event time of the last record admitted, in arrival order: what the alignment
        # of the two topics reads (one outlier moves the watermark for good, not this)
        self.latest: dict[tuple[str, int], float] = {}
        self._horizon = clock() + self.max_future

    def start_batch(self) -> None:
        """Read the wall clock once per batch."""
        self._horizon = self.clock() + self.max_future

    def check(self, topic: str, partition: int, timestamp: float) -> tuple[str, str] | None:
        """``(reason, detail)`` if the event time is out of bounds; else admit it."""
        if timestamp > self._horizon:
            return (
                "future_timestamp",
                f"event time {timestamp:.0f} is more than event_time.max_future_seconds="
                f"{self.max_future:g} ahead of the wall clock",
            )
        key = (topic, partition)
        watermark = self.watermarks.get(key)
        if watermark is None or timestamp > watermark:
            self.watermarks[key] = timestamp
        elif timestamp < watermark - self.max_lateness:
            return (
                "late_timestamp",
                f"event time {timestamp:.0f} is more than event_time.max_lateness_seconds="
                f"{self.max_lateness:g} behind the partition's watermark {watermark:.0f}",
            )
        self.latest[key] = timestamp
        return None

    def forget(self, topic: str, partition: int) -> None:
        """A revoked partition's watermark goes with it (its next owner starts anew)."""
        self.watermarks.pop((topic, partition), None)
        self.latest.pop((topic, partition), None)


class VersionCap:
    """The most active ``max_versions`` model versions per model; the rest are ``__other__``."""

    def __init__(self, settings: Settings) -> None:
        self.hitters = {
            m.name: HeavyHitters(m.max_versions, retire_fraction=0.0, enter_share=VERSION_SHARE)
            for m in settings.models
        }

    def apply(self, predictions: list[Prediction]) -> tuple[list[Prediction], Counter[str]]:
        """The batch, with untracked versions renamed ``__other__``, and per model how many
        of its predictions were."""
        by_model: dict[str, Counter[str]] = defaultdict(Counter)
        for p in predictions:
            by_model[p.model][p.model_version] += 1
        overflow: Counter[str] = Counter()
        for model, versions in by_model.items():
            over = self.hitters[model].update(versions)
            if over:
                overflow[model] = over
        if not overflow:
            return predictions, overflow
        return [
            p
            if p.model_version in self.hitters[p.model].tracked
            else replace(p, model_version=OTHER)
            for p in predictions
        ], overflow

    def take_displaced(self) -> list[tuple[str, str]]:
        """(model, version) of the versions that lost their place since the last call."""
        out = []
        for model, hitters in self.hitters.items():
            out += [(model, version) for version in hitters.retired]
            hitters.retired = []
        return out

    def tracked(self) -> dict[str, int]:
        return {model: len(h.tracked) for model, h in self.hitters.items()}
