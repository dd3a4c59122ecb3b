"""What every detector family reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Crossing:
    """A detector firing on one signal at one event of a batch."""

    row: int  # the event's position in the batch
    column: int  # the signal's position in the bank
    detector: str
    statistic: float | None  # None where the detector exposes none (river's)
    threshold: float | None
