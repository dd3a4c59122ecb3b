"""Quality alarms on labelled outcomes: delay against Lorden's bound, and false alarms.

A binary model's labelled predictions go through streamwatch's real label engine
(:class:`streamwatch.quality.Quality`: join, slices, the Bernoulli CUSUM bank), at a budget of
one false alarm per 10^6 labels per model version. Next to it, on the same error stream of
the affected version or slice: river's ADWIN at its default (``delta=0.002``) and at
``delta=0.02``, which false-alarms at about the same rate as the budget on these streams
(see the false-alarm table).

Delay: labels of the affected stream (the version, or the slice) from the change to the
first alarm on it; a miss is no alarm within the horizon. A 1-point increase in a 5% slice
needs 1.5 million labels of the version per run through the engine, so that row feeds the
slice's detector (:class:`streamwatch.detectors.bernoulli.ConceptCusum`, with the slice's
share of the budget, as the engine builds it) the slice's outcomes directly; the other slice
rows go through the engine. The change comes at a random
offset after the stream's reference (its first 2,000 labels; 50,000 in the row that says
so, as a profile with labelled rows or a larger ``quality.reference_labels`` gives), or, in
the rows that say so, after 60,000 more labels in control, over which the reference grows
(``quality.reference_labels_max``, default 50,000; docs/quality.md). Lorden's bound is
``ln(10^6) / KL(p1 || p0)``: the fewest labels any test at one false alarm per 10^6 needs,
asymptotically, to see the error rate go from ``p0`` to ``p1``.

False alarms: on many stationary outcome streams, every stream with its own reference (so
the reference's sampling error is part of what is measured: one bad draw alarms again and
again, so a few long streams would show the rate of a few references). For speed, they
run the detector object the engine runs (:class:`streamwatch.detectors.bernoulli.ConceptCusum`,
with the engine's settings, its reference growing) fed the outcomes directly, not the whole
engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import drift

from bench.detection.parallel import in_two_processes
from streamwatch.config import QualitySettings, parse_settings
from streamwatch.detectors.bernoulli import ConceptCusum
from streamwatch.quality import Quality
from streamwatch.records import Label, Prediction

ADWIN: Any = drift.ADWIN  # river is untyped
BUDGET = 1e6  # labels between false alarms, per model version
REFERENCE = 2000  # the engine's default quality.reference_labels
GROW_TO = QualitySettings().reference_labels_max  # the default: the reference grows to it
SETTLED = 60_000
T0 = 1_790_000_000.0
ADWIN_TUNED = 0.02
METHODS = ["streamwatch (Bernoulli CUSUM)", "river ADWIN", f"river ADWIN (delta={ADWIN_TUNED})"]

# (rng, n, changed) -> 0/1 errors of a frozen model on the affected stream
Outcomes = Callable[[np.random.Generator, int, bool], np.ndarray]


@dataclass(frozen=True)
class Scenario:
    name: str
    outcomes: Outcomes
    p0: float  # the error rate before the change (for the bound; measured for the generators)
    p1: float
    share: float = 1.0  # the affected slice's share of traffic (1: the whole version)
    reference: int = REFERENCE  # quality.reference_labels: the labels the p0 is read from
    direct: bool = False  # a slice's detector fed its outcomes, not the whole engine
    settled: int = 0  # labels in control after the reference, before the random offset


def rates(p0: float, p1: float) -> Outcomes:
    return lambda rng, n, changed: (rng.random(n) < (p1 if changed else p0)).astype(np.float64)


def frozen_model(make: Callable[[int], Any], before: int, after: int) -> Scenario:
    """A Hoeffding tree trained on 10,000 examples of river generator ``make(before)``, then
    frozen; its errors on ``make(before)`` before the change and ``make(after)`` after it."""
    from river import tree

    model: Any = tree.HoeffdingTreeClassifier()
    for x, y in make(before).take(10_000):
        model.learn_one(x, y)

    def errors(variant: int, n: int, offset: int) -> np.ndarray:
        stream = make(variant).take(offset + n)
        out = [model.predict_one(x) != y for i, (x, y) in enumerate(stream) if i >= offset]
        return np.array(out, dtype=np.float64)

    pool = {False: errors(before, 40_000, 20_000), True: errors(after, 40_000, 20_000)}

    def outcomes(rng: np.random.Generator, n: int, changed: bool) -> np.ndarray:
        return pool[changed][rng.integers(0, len(pool[changed]), n)]  # resampled errors

    return Scenario(
        f"{make(before).__class__.__name__} {before} -> {after} (frozen tree)",
        outcomes,
        float(pool[False].mean()),
        float(pool[True].mean()),
    )


def scenarios() -> list[Scenario]:
    from river.datasets import synth

    out = [
        Scenario(f"error 5% -> {5 + d}%", rates(0.05, 0.05 + d / 100), 0.05, 0.05 + d / 100)
        for d in (1, 2, 5, 10, 20)
    ]
    # the smallest increase again, with the reference a profile's labelled rows (or a larger
    # quality.reference_labels) gives: 2,000 labels read p0 to 0.5 points, half the change
    big = 50_000
    out.append(
        Scenario(
            f"error 5% -> 6%, reference of {big:,} labels",
            rates(0.05, 0.06),
            0.05,
            0.06,
            reference=big,
        )
    )
    # the same increase after the stream has run in control a while: its reference grows
    out.append(
        Scenario(
            f"error 5% -> 6%, after {SETTLED:,} labels at 5%",
            rates(0.05, 0.06),
            0.05,
            0.06,
            settled=SETTLED,
        )
    )
    out += [
        Scenario("5% slice: error 22% -> 40%", rates(0.22, 0.40), 0.22, 0.40, share=0.05),
        Scenario("5% slice: error 5% -> 10%", rates(0.05, 0.10), 0.05, 0.10, share=0.05),
        Scenario(
            "5% slice: error 5% -> 6% (its detector fed directly)",
            rates(0.05, 0.06),
            0.05,
            0.06,
            share=0.05,
            direct=True,
        ),
        Scenario(
            f"5% slice: error 5% -> 6%, after {SETTLED:,} of its labels at 5% (fed directly)",
            rates(0.05, 0.06),
            0.05,
            0.06,
            share=0.05,
            direct=True,
            settled=SETTLED,
        ),
    ]
    out += [
        frozen_model(lambda v: synth.SEA(variant=v, noise=0.05, seed=7), 0, 1),
        frozen_model(lambda v: synth.STAGGER(classification_function=v, seed=7), 0, 1),
        frozen_model(lambda v: synth.Agrawal(classification_function=v, seed=7), 0, 2),
    ]
    return out


def kl(p1: float, p0: float) -> float:
    p0, p1 = (min(max(p, 1e-4), 1 - 1e-4) for p in (p0, p1))  # a perfect model: 1 in 10^4
    return p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))


def bound(s: Scenario) -> float:
    return math.log(BUDGET) / kl(s.p1, s.p0)


def settings(sliced: bool, reference: int = REFERENCE) -> Any:
    model: dict[str, Any] = {
        "name": "m",
        "task": "binary",
        "features": [{"name": "x", "type": "numeric"}],
    }
    if sliced:
        model["slices"] = [{"name": "segment", "keys": ["segment"], "max_values": 10}]
    return parse_settings(
        {
            "models": [model],
            "quality": {
                "concept_detector": "cusum",
                "false_alarm_budget_labels": BUDGET,
                "reference_labels": reference,
                "windows": [{"events": 1000}],
            },
        }
    )


def engine_alarms(
    errors: np.ndarray, segments: np.ndarray, sliced: bool, reference: int = REFERENCE
) -> list[tuple[int, str]]:
    """(label index, slice) of every concept alarm of the engine on these outcomes: each
    outcome is a prediction (score 0.9) and its label (positive unless an error)."""
    quality = Quality(settings(sliced, reference))
    alarms = []
    for start in range(0, len(errors), 2000):
        rows = range(start, min(start + 2000, len(errors)))
        segment = [{"segment": str(segments[i])} for i in rows]
        predictions = [
            Prediction(f"p{i}", "m", "v1", T0 + i, {"x": 1.0}, 0.9, None, None, a, 0, i)
            for i, a in zip(rows, segment, strict=True)
        ]
        labels = [Label(f"p{i}", 0.0 if errors[i] else 1.0, T0 + i, 0, i) for i in rows]
        found = quality.apply(predictions, labels)
        alarms += [(int(a.event_time - T0), a.slice) for a in found if a.detector == "cusum"]
    return alarms


def adwin_alarms(errors: np.ndarray, delta: float) -> list[int]:
    detector: Any = ADWIN(delta=delta)
    alarms = []
    for i, x in enumerate(errors.tolist()):
        detector.update(x)
        if detector.drift_detected:
            alarms.append(i)
    return alarms


@dataclass
class Row:
    delays: list[int]
    misses: int

    def median(self) -> float | None:
        return float(np.median(self.delays)) if self.delays else None

    def cell(self, limit: float) -> str:
        runs = len(self.delays) + self.misses
        missed = f", missed {self.misses}/{runs}" if self.misses else ""
        m = self.median()
        if m is None:
            return f"missed {self.misses}/{runs}"
        return f"{m:,.0f} ({m / limit:.2f}x){missed}"


def delays(scenario: Scenario, runs: int, seed: int) -> dict[str, Row]:
    """Median delay of each method, in labels of the affected stream."""
    rows = {m: Row([], 0) for m in METHODS}
    horizon = int(max(5 * bound(scenario), 2000))
    for r in range(runs):
        rng = np.random.default_rng(seed * 1000 + r)
        before = scenario.reference + scenario.settled + int(rng.integers(1000, 5000))
        stream = np.concatenate(
            [scenario.outcomes(rng, before, False), scenario.outcomes(rng, horizon, True)]
        )
        if scenario.direct:  # the slice's detector as the engine makes it, on its outcomes
            # one slice spec: two shares of the budget
            detector = ConceptCusum(scenario.reference, BUDGET * 2, grow_to=GROW_TO)
            found = [
                start + i
                for start in range(0, len(stream), 10_000)
                for i in detector.update(stream[start : start + 10_000])
            ]
        elif scenario.share < 1.0:  # the stream is a slice: interleave the rest of the traffic
            total = int((before + horizon) / scenario.share)
            in_slice = np.zeros(total, dtype=bool)
            in_slice[np.sort(rng.choice(total, before + horizon, replace=False))] = True
            errors = (rng.random(total) < 0.05).astype(np.float64)
            errors[in_slice] = stream
            segments = np.where(in_slice, "affected", "rest")
            position = np.cumsum(in_slice) - 1  # a label's index in the slice's stream
            found = [
                int(position[i]) for i, s in engine_alarms(errors, segments, True)
                if s == "segment=affected"
            ]  # fmt: skip
        else:
            found = [
                i
                for i, _ in engine_alarms(
                    stream, np.full(len(stream), "all"), False, scenario.reference
                )
            ]
        found_by = {
            METHODS[0]: found,
            METHODS[1]: adwin_alarms(stream, 0.002),
            METHODS[2]: adwin_alarms(stream, ADWIN_TUNED),
        }
        for method, alarms in found_by.items():
            hits = [i for i in alarms if i >= before]
            if hits:
                rows[method].delays.append(min(hits) - before + 1)
            else:
                rows[method].misses += 1
    return rows


STATIONARY = (0.01, 0.05, 0.2)
_SCENARIOS: list[Scenario] = []  # the scenarios of the current run, for the pool's workers


def _scenario_delays(index: int, runs: int, seed: int) -> dict[str, Row]:
    """One scenario's delays, in a worker process (the scenarios hold closures, which do
    not pickle: a forked worker finds them here)."""
    return delays(_SCENARIOS[index], runs, seed)


def false_alarms(streams: int, labels: int, seed: int) -> dict[tuple[float, str], int]:
    """Alarms on stationary outcomes at each error rate: ``streams`` streams, each its own
    reference (the first REFERENCE labels) and then ``labels`` tested labels. A reference's
    sampling error is part of the false-alarm rate, and a bad draw alarms again and again,
    so the rate needs many references, not a few long streams. Every method's alarms are
    counted on the same tested labels (ADWIN reads the reference labels too). The error
    rates run in two processes (each rate's counts do not depend on where it runs)."""
    each = in_two_processes(_rate_false_alarms, STATIONARY, streams, labels, seed)
    return {key: n for counts in each for key, n in counts.items()}


def _rate_false_alarms(
    p: float, streams: int, labels: int, seed: int
) -> dict[tuple[float, str], int]:
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(METHODS, 0)
    for _ in range(streams):
        errors = (rng.random(REFERENCE + labels) < p).astype(np.float64)
        detector = ConceptCusum(REFERENCE, BUDGET, grow_to=GROW_TO)  # no slices
        counts[METHODS[0]] += len(detector.update(errors))
        for method, delta in ((METHODS[1], 0.002), (METHODS[2], ADWIN_TUNED)):
            counts[method] += sum(i >= REFERENCE for i in adwin_alarms(errors, delta))
    for method, n in counts.items():
        print(f"  error {p:.0%}: {method:34} {n} alarms in {streams * labels:,} labels", flush=True)
    return {(p, method): n for method, n in counts.items()}


def tables(runs: int, streams: int, labels: int, seed: int) -> list[str]:
    """The Markdown lines of the quality section."""
    lines = [
        "",
        "Quality alarms: delay in labels of the affected version or slice (median; in",
        "brackets, its ratio to Lorden's bound at one false alarm per 10^6 labels):",
        "",
        "| scenario | p0 -> p1 | Lorden's bound | " + " | ".join(METHODS) + " |",
        "| --- | --- | --- |" + " --- |" * len(METHODS),
    ]
    global _SCENARIOS
    _SCENARIOS = scenarios()  # made once, before the pool forks (the frozen trees train)
    found = in_two_processes(_scenario_delays, range(len(_SCENARIOS)), runs, seed)
    for scenario, rows in zip(_SCENARIOS, found, strict=True):
        limit = bound(scenario)
        cells = " | ".join(rows[m].cell(limit) for m in METHODS)
        print(f"  {scenario.name:40} bound {limit:,.0f}: {cells}", flush=True)
        lines.append(
            f"| {scenario.name} | {scenario.p0:.3f} -> {scenario.p1:.3f} | {limit:,.0f} | {cells} |"
        )
    fa = false_alarms(streams, labels, seed)
    lines += [
        "",
        f"Quality false alarms per 10^6 labels, on stationary outcomes ({streams:,} streams, "
        f"each with its own reference of {REFERENCE:,} labels, then {labels:,} labels tested):",
        "",
        "| error rate | " + " | ".join(METHODS) + " |",
        "| --- |" + " --- |" * len(METHODS),
    ]
    total = streams * labels
    for p in STATIONARY:
        rates = [f"{fa[(p, m)] / total * 1e6:.2f} ({fa[(p, m)]} in {total:,})" for m in METHODS]
        lines.append(f"| {p:.0%} | " + " | ".join(rates) + " |")
    return lines
