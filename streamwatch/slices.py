"""Slices: which segment an event belongs to, with a bound on how many are tracked.

A slice spec names keys (attributes first, then features); an event's slice value is
``key=value`` pairs joined by ``,`` (numeric keys with edges become buckets such as
``amount=[10,100)``). Each spec tracks at most ``max_values`` distinct values, the first
ones seen; later values share ``NAME:__other__`` and are counted as overflow. Whatever the input,
the number of slice series stays bounded.
"""

from __future__ import annotations

import bisect
from typing import Any

from streamwatch.config import SliceSpec
from streamwatch.decode import Prediction

ALL = "__all__"  # the whole model version
OTHER = "__other__"


def _bucket(value: Any, edges: list[float]) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "missing"
    i = bisect.bisect_right(edges, float(value))
    low = "-inf" if i == 0 else f"{edges[i - 1]:g}"
    high = "inf" if i == len(edges) else f"{edges[i]:g}"
    return f"[{low},{high})"


class Slicer:
    """Slice values of events for one model's slice specs, with the cardinality guard."""

    def __init__(self, specs: list[SliceSpec]) -> None:
        self.specs = specs
        self.tracked: list[dict[str, int]] = [{} for _ in specs]  # value -> order seen
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
        """Per spec, each event's tracked slice value (or ``NAME:__other__``)."""
        out = []
        for i, spec in enumerate(self.specs):
            tracked = self.tracked[i]
            other = f"{spec.name}:{OTHER}"
            column = []
            for p in predictions:  # one string per event and slice spec
                value = self.value(spec, p)
                if value not in tracked:
                    if len(tracked) >= spec.max_values:
                        self.overflow[i] += 1
                        value = other
                    else:
                        tracked[value] = len(tracked)
                column.append(value)
            out.append(column)
        return out
