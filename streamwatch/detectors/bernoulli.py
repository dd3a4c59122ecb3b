"""Bernoulli CUSUM charts on a 0/1 outcome stream (a model's errors), under a budget.

A labelled prediction is an error or not. Before a change the error rate is ``p0`` (the
reference); after it, some ``p1 > p0`` nobody knows in advance. The log-likelihood-ratio
CUSUM for one design ``p1`` is the fastest test at its false-alarm rate (Lorden, Moustakides)
for a change to exactly ``p1``; a *bank* of them at several designs (``p0`` plus 1, 2, 4, 8
and 16 points), the budget split across them, stays within about 1.25x of that optimum for
every increase in between (docs/quality.md has the arithmetic).

Each chart is the Bernoulli CUSUM of Reynolds and Stoumbos (1999) on an integer lattice: the
log-likelihood ratio adds ``a = ln(p1/p0)`` on an error and ``-b = ln((1-p1)/(1-p0))`` on a
correct outcome; their ratio is rounded to ``up : down`` small integers (``up`` on an error,
``-down`` on a success), which makes the chart exact for a design within a few percent of
the one asked for. On the lattice the in-control run length is a finite Markov chain, solved
exactly (a banded linear system), so thresholds meet the budget without simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from scipy import linalg

from streamwatch.detectors.calibration import false_position, kept
from streamwatch.statistics import FloatArray, IntArray

#: Error-rate increases (in absolute points) the bank is designed for.
DESIGN_INCREASES = (0.01, 0.02, 0.04, 0.08, 0.16)
RESOLUTION = 4.0  # the smallest design, in standard errors of the reference
MARGIN_LABELS = 2000  # references this large get a margin of one standard error
MAX_DOWN = 40  # lattice steps on a success, at most
JOIN_Z = 2.0  # a block whose error rate is this many standard errors above stays out
MAX_STATES = 200_000  # a threshold needing more lattice states is refused (ARL ~ 1e30)


@dataclass(frozen=True)
class Chart:
    """One design of the bank: the lattice steps and the threshold (alarm at ``>= h``)."""

    p1: float  # the design the lattice steps are exact for
    up: int
    down: int
    h: int


def lattice(p0: float, p1: float) -> tuple[int, int]:
    """Integer steps ``(up, down)`` whose exact design is within a tenth of the increase of
    ``p1``, with the smallest ``down`` that gets there (the chart's states, and its cost,
    grow with ``down``); the closest one found otherwise."""
    ratio = math.log(p1 / p0) / math.log((1.0 - p0) / (1.0 - p1))
    best = (math.inf, 1, 1)
    for down in range(1, MAX_DOWN + 1):
        for up in {max(1, math.floor(ratio * down)), math.ceil(ratio * down)}:
            if down / (up + down) <= p0:  # in control the chart must drift down
                continue
            error = abs(design_of(p0, up, down) - p1)
            if error < best[0]:
                best = (error, up, down)
        if best[0] <= 0.1 * (p1 - p0):
            break
    _, up, down = best
    g = math.gcd(up, down)
    return up // g, down // g


def design_of(p0: float, up: int, down: int) -> float:
    """The ``p1`` for which ``up : down`` is the exact log-likelihood-ratio ratio."""
    lo, hi = p0, 1.0 - 1e-12
    for _ in range(100):  # the ratio a/b falls as p1 rises: bisection
        mid = (lo + hi) / 2.0
        ratio = math.log(mid / p0) / math.log((1.0 - p0) / (1.0 - mid))
        lo, hi = (mid, hi) if ratio > up / down else (lo, mid)
    return (lo + hi) / 2.0


def average_run_length(p: float, up: int, down: int, h: int) -> float:
    """Expected outcomes until the chart ``S = max(0, S + up*x - down*(1-x))`` reaches
    ``h``, from 0, when each outcome is an error with probability ``p`` (exact: a banded
    Markov-chain solve over the states ``0 .. h-1``)."""
    n = h
    # (I - Q) L = 1; Q[i, i+up] = p, Q[i, max(i-down, 0)] += 1-p. Banded: `down` below, `up` above.
    ab = np.zeros((up + down + 1, n))
    ab[up, :] = 1.0  # the diagonal
    i = np.arange(n)
    rise = i + up < n
    ab[0, i[rise] + up] = -p  # row i, column i + up: ab[up + i - j, j]
    fall = np.maximum(i - down, 0)
    np.subtract.at(ab, (up + i - fall, fall), 1.0 - p)
    return float(linalg.solve_banded((down, up), ab, np.ones(n))[0])


@cache
def threshold(p: float, up: int, down: int, target: float) -> int:
    """The smallest ``h`` whose in-control run length reaches ``target``.

    The log run length is close to linear in ``h``, so a false-position search on it (the
    Illinois variant, on integers) needs a handful of chain solves where bisection needs
    twenty. Kept on disk with the drift thresholds (:func:`calibration.kept`)."""
    name = f"bernoulli {p!r} {up} {down} {target!r}"
    return int(kept(name, lambda: _search(p, up, down, target)))


def _search(p: float, up: int, down: int, target: float) -> int:
    goal = math.log(target)

    def gap(h: int) -> float:
        return math.log(average_run_length(p, up, down, h)) - goal

    lo, hi = 1, 2 * max(up, down)
    f_lo, f_hi = gap(lo), gap(hi)
    if f_lo >= 0:
        return 1
    while f_hi < 0:  # extrapolate the line through the last two points, a little past it
        step = (hi - lo) * -f_hi / max(f_hi - f_lo, 1e-12)
        lo, f_lo = hi, f_hi
        hi += max(int(1.1 * step) + 1, 1)
        if hi > MAX_STATES:
            raise ValueError(f"no Bernoulli CUSUM threshold reaches a run length of {target:g}")
        f_hi = gap(hi)

    def inside(lo: int, f_lo: float, hi: int, f_hi: float) -> int:
        mid = lo + round((hi - lo) * -f_lo / (f_hi - f_lo))
        return min(max(mid, lo + 1), hi - 1)

    return false_position(gap, lo, f_lo, hi, f_hi, inside, lambda lo, hi: hi - lo <= 1)


def quantised(p: float) -> float:
    """``p`` rounded up to a grid 1% apart (relative), so that streams with nearly the same
    reference rate share one calibration; rounding up errs towards fewer false alarms."""
    return min(math.exp(math.ceil(math.log(p) / 0.01) * 0.01), 0.99)


@cache
def bank(
    p0: float, run_length: float, increases: tuple[float, ...] = DESIGN_INCREASES
) -> tuple[Chart, ...]:
    """The bank for reference rate ``p0``: one chart per design increase that stays a
    rate (designs that round to the same lattice are merged), each with an in-control run
    length of ``run_length`` times the number of charts (the budget split over them)."""
    steps: list[tuple[int, int]] = []
    for d in increases:
        if p0 + d < 0.999:
            s = lattice(p0, p0 + d)
            if s not in steps:
                steps.append(s)
    target = run_length * max(1, len(steps))
    return tuple(
        Chart(design_of(p0, u, dn), u, dn, threshold(p0, u, dn, target)) for u, dn in steps
    )


@dataclass
class ErrorCusum:
    """The bank of Bernoulli CUSUMs on one stream of outcomes, with its reference rate.

    ``update`` takes a batch of 0/1 outcomes and returns the positions where an alarm was
    raised; after an alarm every chart restarts from zero (river's convention), so a lasting
    increase keeps counting. The state is a few integers: checkpointable as is."""

    p0: float
    run_length: float
    smallest: float = 0.0  # designs for smaller increases do not run
    charts: tuple[Chart, ...] = field(init=False)
    state: IntArray = field(init=False)

    def __post_init__(self) -> None:
        increases = tuple(d for d in DESIGN_INCREASES if d >= self.smallest)
        self.charts = bank(self.p0, self.run_length, increases or DESIGN_INCREASES[-1:])
        self.state = np.zeros(len(self.charts), dtype=np.int64)

    def update(self, errors: FloatArray) -> list[int]:
        if not self.charts or not len(errors):
            return []
        x = np.asarray(errors, dtype=bool)[:, None]
        up = np.array([c.up for c in self.charts])
        down = np.array([c.down for c in self.charts])
        h = np.array([c.h for c in self.charts])
        y = np.where(x, up, -down)  # (events, charts)
        alarms: list[int] = []
        begin, state = 0, self.state
        while begin < len(y):
            c = np.cumsum(y[begin:], axis=0)
            s = c - np.minimum(np.minimum.accumulate(c, axis=0), -state)
            over = (s >= h).any(axis=1)
            if not over.any():
                state = s[-1]
                break
            first = int(over.argmax())
            alarms.append(begin + first)
            state = np.zeros_like(state)
            begin += first + 1
        self.state = state
        return alarms

    def values(self) -> float:
        """The chart closest to its threshold, as a fraction of it."""
        if not self.charts:
            return 0.0
        return float(max(s / c.h for s, c in zip(self.state.tolist(), self.charts, strict=True)))


def reference_rate(errors: int, outcomes: int) -> float:
    """The reference error rate from ``errors`` in ``outcomes`` labelled predictions: the
    estimate plus :func:`margin` standard errors (see :func:`reference_bank`)."""
    p = (errors + 1.0) / (outcomes + 2.0)
    return quantised(p + margin(outcomes) * standard_error(errors, outcomes))


def margin(outcomes: int) -> float:
    """Standard errors added to a reference of ``outcomes`` labels: one from
    ``MARGIN_LABELS`` labels on, more below (0.6 more per halving). A reference's error
    weighs more the smaller it is (its few errors are a skewed count, and the designs that
    run are fewer and closer to it): with one standard error, references of 200 labels
    false-alarmed at about 6 times the budget and 500 at about 2 times, over 1,500 to 3,000
    references each at 1% to 25% errors (``tests/unit/test_bernoulli.py``)."""
    if outcomes >= MARGIN_LABELS:
        return 1.0
    return 1.0 + 0.6 * math.log2(MARGIN_LABELS / max(outcomes, 1))


def standard_error(errors: int, outcomes: int) -> float:
    p = (errors + 1.0) / (outcomes + 2.0)
    return math.sqrt(p * (1.0 - p) / max(outcomes, 1))


def reference_bank(errors: int, outcomes: int, run_length: float) -> ErrorCusum:
    """The bank for a reference of ``errors`` in ``outcomes``. A reference estimated too low
    reads its own sampling error as an increase and spends the budget on it, and a design
    close to the reference is the one that suffers. So the rate is the estimate plus a
    margin (one standard error from 2,000 labels on, more below: :func:`margin`), and only
    designs at least four standard errors above it run: a chart whose reference value falls
    under the true rate then takes a reference off by more than five standard errors
    (docs/quality.md)."""
    smallest = RESOLUTION * standard_error(errors, outcomes)
    return ErrorCusum(reference_rate(errors, outcomes), run_length, smallest)


@dataclass
class ConceptCusum:
    """A stream's error-rate test: its first ``reference_labels`` outcomes are the
    reference, then an :class:`ErrorCusum` runs on the rest. Given ``seen`` and ``errors``
    from labelled reference data (a baseline profile), it starts testing at once.

    With ``grow_to`` above the reference, the reference grows with the stream's own tested
    outcomes, one block behind them (a *self-starting* test): the tested outcomes are cut
    into blocks as large as the reference is when the block starts, and a block joins the
    reference when the block after it ends with no alarm on either, if its error rate is
    within ``JOIN_Z`` standard errors of the reference's and the reference then holds at
    most ``grow_to`` labels. An alarm drops the block held back and starts a new one after
    it. So a change joins the reference only if it went unseen for a
    whole block, at least as many labels as the reference holds, and a reference that knows
    its rate better runs designs for smaller increases (:func:`reference_bank`). Every
    block boundary falls on a count of outcomes, so batching does not change the alarms.
    The state is a few integers, checkpointable as is."""

    reference_labels: int
    run_length: float
    seen: int = 0
    errors: int = 0
    cusum: ErrorCusum | None = None
    grow_to: int = 0  # the reference grows up to this many labels (0: it does not)
    block: tuple[int, int] = (0, 0)  # tested outcomes and errors of the block being read
    held: tuple[int, int] | None = None  # the last whole block, until the next one ends

    def __post_init__(self) -> None:
        if self.seen and self.seen >= self.reference_labels:
            self.cusum = reference_bank(self.errors, self.seen, self.run_length)

    def update(self, errors: FloatArray) -> list[int]:
        """Feed 0/1 outcomes (NaN: no outcome, skipped); the positions of the alarms."""
        rows = np.flatnonzero(~np.isnan(errors))
        x = errors[rows]
        start = 0
        if self.cusum is None:
            start = min(len(x), self.reference_labels - self.seen)
            self.seen += start
            self.errors += int(np.count_nonzero(x[:start]))
            if self.seen < self.reference_labels:
                return []
            self.cusum = reference_bank(self.errors, self.seen, self.run_length)
        alarms: list[int] = []
        while start < len(x):
            end = len(x)
            if self._growing():
                end = min(end, start + self.seen - self.block[0])  # the block's end
            part = x[start:end]
            fired = self.cusum.update(part)
            alarms += [start + i for i in fired]
            if self._growing():
                self._read(part, fired)
            start = end
        return [int(rows[i]) for i in alarms]

    def _growing(self) -> bool:
        """Another block can still join: the reference and the block held back fit."""
        held = self.held[0] if self.held else 0
        return self.seen < self.grow_to and self.seen + held <= self.grow_to

    def _read(self, part: FloatArray, fired: list[int]) -> None:
        """Count ``part`` into the block; at the block's end the block held back joins the
        reference (if the reference stays within ``grow_to``) and this one is held back."""
        if fired:  # the change, if it is one, must not join: both blocks start again
            self.held = None
            part = part[fired[-1] + 1 :]
            self.block = (0, 0)
        self.block = (self.block[0] + len(part), self.block[1] + int(np.count_nonzero(part)))
        if self.block[0] < self.seen:
            return
        if (
            self.held is not None
            and self.seen + self.held[0] <= self.grow_to
            and self._like_the_reference(*self.held)
        ):
            self.seen += self.held[0]
            self.errors += self.held[1]
            self._rebuild()
        self.held, self.block = self.block, (0, 0)

    def _like_the_reference(self, outcomes: int, errors: int) -> bool:
        """A block's error rate is not above the reference's by more than ``JOIN_Z``
        standard errors of their difference: a block that is may hold a change the bank
        has not seen yet, and stays out."""
        p = (self.errors + errors + 1.0) / (self.seen + outcomes + 2.0)
        se = math.sqrt(p * (1.0 - p) * (1.0 / outcomes + 1.0 / self.seen))
        return errors / outcomes - self.errors / self.seen <= JOIN_Z * se

    def _rebuild(self) -> None:
        """The bank of the grown reference; a chart on the same lattice keeps its state."""
        assert self.cusum is not None
        before = {
            (c.up, c.down): int(s) for c, s in zip(self.cusum.charts, self.cusum.state, strict=True)
        }
        self.cusum = reference_bank(self.errors, self.seen, self.run_length)
        self.cusum.state = np.array(
            [min(before.get((c.up, c.down), 0), c.h - 1) for c in self.cusum.charts],
            dtype=np.int64,
        )


@dataclass
class ExceedanceCusum:
    """A regression model's absolute errors, tested as outcomes: an error above the
    reference's ``level`` quantile is a "miss". Its first ``reference_labels`` errors give
    the quantile, and in control a miss has probability ``1 - level`` (exactly, for
    continuous errors, whatever their distribution), so the Bernoulli bank's exact
    calibration applies; larger errors make misses more frequent."""

    reference_labels: int
    run_length: float
    level: float = 0.8
    cutoff: float | None = None
    cusum: ErrorCusum | None = None
    _reference: list[float] = field(default_factory=list)

    def update(self, errors: FloatArray) -> list[int]:
        """Feed absolute errors (NaN: no outcome, skipped); the positions of the alarms."""
        rows = np.flatnonzero(~np.isnan(errors))
        x = errors[rows]
        start = 0
        if self.cusum is None:
            start = min(len(x), self.reference_labels - len(self._reference))
            self._reference += x[:start].tolist()
            if len(self._reference) < self.reference_labels:
                return []
            reference = np.array(self._reference)
            self.cutoff = float(np.quantile(reference, self.level))
            misses = int(np.count_nonzero(reference > self.cutoff))
            self.cusum = reference_bank(misses, len(reference), self.run_length)
            self._reference = []
        assert self.cutoff is not None
        missed = (x[start:] > self.cutoff).astype(np.float64)
        return [int(rows[start + i]) for i in self.cusum.update(missed)]
