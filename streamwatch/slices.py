"""Slices: which segment an event belongs to, with a bound on how many are tracked.

A slice spec names keys (attributes first, then features); an event's slice value is
``key=value`` pairs joined by ``,`` (numeric keys with edges become buckets such as
``amount=[10,100)``). Each spec tracks at most ``max_values`` values, its *heavy hitters*:

- a summary of recent frequencies (:class:`RecentCounts`, decayed with a half-life of
  ``HALF_LIFE_EVENTS`` events, ``40 * max_values`` entries) sees every value;
- a value is tracked once its count carries at least ``1 / (20 * max_values)`` of the recent
  traffic (``ENTER_SHARE``: 0.1% for the default 50) and there is room, or once it also
  outweighs the lightest tracked value by ``MARGIN`` (which it then replaces). The summary
  undercounts by at most ``1 / (40 * max_values)`` of the traffic, so every value with twice
  the entering share qualifies;
- a tracked value whose share falls under an eighth of the entering share is retired.

Every other event is counted as overflow and scored under ``NAME:__other__``. Whatever the
input, the number of slice series stays bounded, and a value that goes away is retired.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter
from typing import Any

from streamwatch.config import SliceSpec
from streamwatch.records import Prediction

ALL = "__all__"  # the whole model version
OTHER = "__other__"
HALF_LIFE_EVENTS = 100_000  # of a slice spec's events: how fast old traffic is forgotten
ENTER_SHARE = 1 / 20  # over max_values: the share of recent traffic a tracked value needs
MARGIN = 1.25  # a newcomer replaces the lightest tracked value only when this much heavier
RETIRE_FRACTION = 1 / 8  # of the entering share: below it a tracked value is retired


def _bucket(value: Any, edges: list[float]) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "missing"
    i = bisect.bisect_right(edges, float(value))
    low = "-inf" if i == 0 else f"{edges[i - 1]:g}"
    high = "inf" if i == len(edges) else f"{edges[i]:g}"
    return f"[{low},{high})"


class RecentCounts:
    """Decayed frequencies of the most frequent values, in bounded memory.

    The Misra-Gries frequent-items summary, merged a batch at a time (Agarwal et al. 2012,
    "Mergeable summaries"): all counts decay by ``0.5 ** (events / half_life)``, the batch's
    counts are added, and beyond ``capacity`` entries the ``capacity + 1``-th largest count
    is subtracted from every entry and the entries left without weight are dropped. Every
    count is at most its value's true decayed frequency, and at least that minus
    ``total / (capacity + 1)``. river's ``sketch.HeavyHitters`` counts per event and
    unweighted; per batch this costs one ``Counter`` (about 10x less per event).
    """

    def __init__(self, capacity: int, half_life: float = HALF_LIFE_EVENTS) -> None:
        self.capacity = capacity
        self.half_life = half_life
        self.counts: dict[str, float] = {}
        self.total = 0.0

    def update(self, batch: Counter[str]) -> None:
        events = sum(batch.values())
        decay = 0.5 ** (events / self.half_life)
        counts = {v: c * decay for v, c in self.counts.items()}
        for value, n in batch.items():
            counts[value] = counts.get(value, 0.0) + n
        self.total = self.total * decay + events
        if len(counts) > self.capacity:
            kept = heapq.nlargest(self.capacity + 1, counts.items(), key=lambda item: item[1])
            cut = kept[-1][1]
            counts = {v: c - cut for v, c in kept[:-1] if c > cut}
        self.counts = counts

    def share(self, value: str) -> float:
        return self.counts.get(value, 0.0) / self.total if self.total > 0 else 0.0


class HeavyHitters:
    """At most ``max_values`` tracked values, the most frequent of recent traffic.

    A value enters once it carries ``enter_share / max_values`` of recent traffic and there
    is room, or once it outweighs the lightest tracked value by ``MARGIN`` (which it then
    replaces); with ``retire_fraction`` > 0 a value whose share falls under that fraction of
    the entering share leaves by itself. ``retired`` lists the values that left."""

    def __init__(
        self,
        max_values: int,
        retire_fraction: float = RETIRE_FRACTION,
        enter_share: float = ENTER_SHARE,
    ) -> None:
        self.max_values = max_values
        self.retire_fraction = retire_fraction
        self.enter_share = enter_share
        self.tracked: dict[str, None] = {}  # an ordered set
        self.recent = RecentCounts(40 * max_values)
        self.retired: list[str] = []

    def update(self, batch: Counter[str]) -> int:
        """Count a batch in and retrack; return how many of its events are not tracked."""
        self.recent.update(batch)
        self._retrack()
        return sum(n for v, n in batch.items() if v not in self.tracked)

    def _retrack(self) -> None:
        recent, tracked = self.recent, self.tracked
        support = self.enter_share / self.max_values
        floor = support * self.retire_fraction
        for value in [v for v in tracked if recent.share(v) < floor]:
            self._retire(value)
        candidates = sorted(
            (
                (n, v)
                for v, n in recent.counts.items()
                if v not in tracked and n >= support * recent.total
            ),
            reverse=True,
        )
        for n, value in candidates:
            if len(tracked) >= self.max_values:
                lightest = min(tracked, key=lambda v: recent.counts.get(v, 0.0))
                if n <= MARGIN * recent.counts.get(lightest, 0.0):
                    break  # candidates come heaviest first: none of the rest wins either
                self._retire(lightest)
            tracked[value] = None

    def _retire(self, value: str) -> None:
        del self.tracked[value]
        self.retired.append(value)


class Slicer:
    """Slice values of events for one model's slice specs, with the heavy-hitter guard."""

    def __init__(self, specs: list[SliceSpec]) -> None:
        self.specs = specs
        self.hitters = [HeavyHitters(s.max_values) for s in specs]
        self.tracked = [h.tracked for h in self.hitters]  # ordered sets, per spec
        self.recent = [h.recent for h in self.hitters]
        self.overflow = [0] * len(specs)

    def value(self, spec: SliceSpec, p: Prediction) -> str:
        parts = []
        for key in spec.keys:
            raw = p.attributes.get(key, p.features.get(key))
            text = (
                _bucket(raw, spec.edges[key])
                if key in spec.edges
                else ("missing" if raw is None else str(raw))
            )
            parts.append(f"{key}={text}")
        return ",".join(parts)

    def columns(self, predictions: list[Prediction]) -> list[list[str]]:
        """Count a batch in, update the tracked values, and return per spec each event's
        tracked slice value (or ``NAME:__other__``). Each event must come here once."""
        out = []
        for i, spec in enumerate(self.specs):
            values = [self.value(spec, p) for p in predictions]  # one string per event
            self.overflow[i] += self.hitters[i].update(Counter(values))
            out.append(self._tracked_or_other(i, values))
        return out

    def column(self, i: int, predictions: list[Prediction]) -> list[str]:
        """Spec ``i``'s tracked value (or ``NAME:__other__``) of each event, as tracked now,
        without counting the events in (a second reader of events :meth:`columns` counts)."""
        return self._tracked_or_other(i, [self.value(self.specs[i], p) for p in predictions])

    def _tracked_or_other(self, i: int, values: list[str]) -> list[str]:
        tracked, other = self.tracked[i], f"{self.specs[i].name}:{OTHER}"
        return [v if v in tracked else other for v in values]

    def is_tracked(self, value: str) -> bool:
        return any(value in tracked for tracked in self.tracked)

    def take_retired(self) -> list[tuple[str, str]]:
        """(slice name, value) of the values retired since the last call."""
        retired = []
        for spec, hitters in zip(self.specs, self.hitters, strict=True):
            retired += [(spec.name, value) for value in hitters.retired]
            hitters.retired = []
        return retired
