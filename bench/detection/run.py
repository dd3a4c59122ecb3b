"""Detection quality: delay, misses and false alarms, side by side on the same streams.

    .venv/bin/python bench/detection/run.py [--runs 40] [--out bench/detection/results.md]

Every stream is one model with 12 features (numeric unless the scenario is categorical) and
a prediction. streamwatch runs its real engine (the monitor the worker and `replay` run) at a
false-alarm budget of one per 10^6 events per model; the first 20,000 events are its
warm-up reference. Next to it, on the same events:

* river's ADWIN, PageHinkley and KSWIN at default settings, one per feature, per event;
  and ADWIN and PageHinkley tuned to streamwatch's budget (the parameter that sets their
  false alarms moved until they came at about one per 10^6 events per model), so that
  delays are compared at an equal false-alarm rate, not only at river's defaults;
* a windowed two-sample test with scipy: tumbling windows of 500 events against the
  20,000-event reference, KS (numeric) or chi-square (categorical), at the same budget
  (Bonferroni: alpha = 500 / (10^6 x 12)).

Delay: events from the change to the first alarm on the changed feature; a miss is no alarm
within 5,000 events. The change comes at a random offset, not on a window boundary. Next
to it, Lorden's bound: ``ln(10^6 x 48) / KL``, the fewest events any test at the budget,
split over 12 features with 4 one-sided tests each, needs for the change's Kullback-Leibler
divergence per event, asymptotically. False alarms: alarms on stationary streams, per 10^6
events per model (all features together), on streams of the length given in the table
(10^7 events for streamwatch and the tuned river detectors).

Then the quality alarms on labelled outcomes (:mod:`bench.detection.quality`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from river import drift
from scipy import integrate, stats

from streamwatch.config import parse_settings
from streamwatch.monitor import Monitor
from streamwatch.records import Prediction

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.detection import quality
from bench.detection.parallel import in_two_processes

FEATURES = 12
REFERENCE = 20_000
BEFORE = 2_000  # stationary events between the reference and the change
HORIZON = 5_000  # events after the change within which a detection counts
BUDGET = 1e6
WINDOW = 500
CATEGORIES = np.array(["a", "b", "c", "d", "e"])
BASE_P = np.array([0.4, 0.3, 0.15, 0.1, 0.05])

Generator = Callable[[np.random.Generator, int, bool], np.ndarray]


@dataclass(frozen=True)
class Scenario:
    name: str
    categorical: bool
    generate: Generator  # (rng, n, changed) -> values of the changed feature
    kl: float  # KL divergence per event of the changed feature, after || before

    @property
    def bound(self) -> float:
        """Lorden's bound: ln(budget x 48) / KL, the budget split over 12 features x 4
        one-sided tests."""
        return math.log(BUDGET * FEATURES * 4) / self.kl


def kl_normal(shift: float = 0.0, scale: float = 1.0) -> float:
    return (shift**2 + scale**2 - 1.0) / 2.0 - math.log(scale)


def kl_heavy(shift: float) -> float:
    loc = shift * math.sqrt(3)
    after, before = stats.t(3, loc=loc), stats.t(3)
    value, _ = integrate.quad(
        lambda x: after.pdf(x) * (after.logpdf(x) - before.logpdf(x)), -np.inf, np.inf
    )
    return float(value)


def kl_frequencies(p: np.ndarray) -> float:
    """A category the reference never saw counts as 1 in REFERENCE events (what a reference
    of that size can tell from zero)."""
    before = np.append(BASE_P, 0.0)[: len(p)]
    before = np.maximum(before, 1.0 / REFERENCE)
    before /= before.sum()
    return float(np.sum(p * np.log(p / before)))


def normal(shift: float = 0.0, scale: float = 1.0) -> Generator:
    return lambda rng, n, changed: rng.normal(
        shift if changed else 0.0, scale if changed else 1.0, n
    )


def heavy(shift: float) -> Generator:  # Student t, 3 degrees of freedom (std sqrt(3))
    return lambda rng, n, changed: rng.standard_t(3, n) + (shift * np.sqrt(3) if changed else 0)


def frequencies(p: np.ndarray) -> Generator:
    return lambda rng, n, changed: rng.choice(
        np.append(CATEGORIES, "new") if len(p) == 6 else CATEGORIES,
        n,
        p=p if changed else (np.append(BASE_P, 0.0) if len(p) == 6 else BASE_P),
    )


SHIFTED = np.array([0.3, 0.3, 0.2, 0.1, 0.1])
NEW = np.append(BASE_P * 0.95, 0.05)
SCENARIOS = [
    *(Scenario(f"mean +{d:g} sd", False, normal(d), kl_normal(d)) for d in (0.25, 0.5, 1, 2)),
    *(Scenario(f"sd x{r:g}", False, normal(0, r), kl_normal(0, r)) for r in (1.25, 1.5, 2)),
    Scenario("heavy tails (t3), mean +0.5 sd", False, heavy(0.5), kl_heavy(0.5)),
    Scenario("category frequencies", True, frequencies(SHIFTED), kl_frequencies(SHIFTED)),
    Scenario("new category at 5%", True, frequencies(NEW), kl_frequencies(NEW)),
]


def stream(rng: np.random.Generator, scenario: Scenario, n: int, change: int | None) -> np.ndarray:
    """(n, FEATURES) values; feature 0 follows the scenario and changes at ``change``."""
    if scenario.categorical:
        data = rng.choice(CATEGORIES, (n, FEATURES), p=BASE_P).astype(object)
    else:
        data = rng.normal(size=(n, FEATURES)).astype(object)
    cut = n if change is None else change
    data[:cut, 0] = scenario.generate(rng, cut, False)
    if change is not None:
        data[change:, 0] = scenario.generate(rng, n - change, True)
    return data


def settings(categorical: bool, budget: float = BUDGET) -> Any:
    kind = "categorical" if categorical else "numeric"
    return parse_settings(
        {
            "models": [
                {
                    "name": "m",
                    "task": "binary",
                    "reference": {"warmup_events": REFERENCE},
                    "features": [{"name": f"x{i}", "type": kind} for i in range(FEATURES)],
                }
            ],
            "drift": {
                "false_alarm_budget_events": budget,
                "windows": [{"events": 2000}],
                "categorical_test_events": WINDOW,
            },
        }
    )


def ours(data: np.ndarray, categorical: bool, budget: float = BUDGET) -> list[tuple[int, int]]:
    """(event index, feature) of every alarm on a feature, through the real monitor."""
    return ours_chunks([data], categorical, budget)


def ours_chunks(
    chunks: Iterable[np.ndarray], categorical: bool, budget: float = BUDGET
) -> list[tuple[int, int]]:
    """:func:`ours` on a stream given in consecutive chunks of rows (one monitor throughout),
    so that a stream of 10^7 events need not be in memory at once."""
    monitor = Monitor(settings(categorical, budget))
    names = [f"x{i}" for i in range(FEATURES)]
    score = 0.5  # a constant-output model: prediction alarms are not what is measured here
    alarms = []
    offset = 0
    for data in chunks:
        for start in range(0, len(data), 2000):
            rows = data[start : start + 2000].tolist()
            at = offset + start
            batch = [
                Prediction(
                    str(at + i),
                    "m",
                    "v1",
                    float(at + i),
                    dict(zip(names, row, strict=True)),
                    score,
                    None,
                    None,
                    {},
                    0,
                    at + i,
                )
                for i, row in enumerate(rows)
            ]
            for a in monitor.apply(batch):
                if a.signal == "feature":
                    alarms.append((a.offset, int(a.feature[1:])))
        offset += len(data)
    return alarms


def river_alarms(
    factory: Callable[[], Any],
    data: np.ndarray,
    features: list[int],
    start: int,
    stop_after: int | None = None,
) -> list[tuple[int, int]]:
    """Alarms of one detector per feature; with ``stop_after``, a feature's stream ends at
    its first alarm from that index on (all a delay needs)."""
    alarms = []
    for j in features:
        detector = factory()
        for i, value in enumerate(data[start:, j].astype(float), start):
            detector.update(value)
            if detector.drift_detected:
                alarms.append((i, j))
                if stop_after is not None and i >= stop_after:
                    break
    return alarms


def river_chunks(
    factory: Callable[[], Any], chunks: Iterable[np.ndarray], features: list[int], start: int
) -> list[tuple[int, int]]:
    """:func:`river_alarms` on a stream given in consecutive chunks of rows (one detector
    per feature throughout)."""
    detectors = {j: factory() for j in features}
    alarms = []
    offset = 0
    for data in chunks:
        first = max(start - offset, 0)
        for j in features:
            detector = detectors[j]
            for i, value in enumerate(data[first:, j].astype(float).tolist(), offset + first):
                detector.update(value)
                if detector.drift_detected:
                    alarms.append((i, j))
        offset += len(data)
    return sorted(alarms)


def windowed_test(
    data: np.ndarray, categorical: bool, features: list[int]
) -> list[tuple[int, int]]:
    alpha = WINDOW / (BUDGET * FEATURES)
    alarms = []
    for j in features:
        reference = data[:REFERENCE, j]
        for start in range(REFERENCE, len(data) - WINDOW + 1, WINDOW):
            window = data[start : start + WINDOW, j]
            if categorical:
                cats = np.unique(np.concatenate([reference, window]).astype(str))
                table = np.array(
                    [[np.sum(reference == c) for c in cats], [np.sum(window == c) for c in cats]]
                )
                p = stats.chi2_contingency(table, correction=False).pvalue
            else:
                p = stats.ks_2samp(
                    reference.astype(float), window.astype(float), method="asymp"
                ).pvalue
            if p < alpha:
                alarms.append((start + WINDOW - 1, j))
    return alarms


# river's detectors tuned to streamwatch's budget: the parameter that sets each one's false
# alarms, moved until they came at about one per 10^6 events per model on the normal
# stationary stream (ADWIN: 0.5 at delta 0.0005, 1.4 at 0.0007; PageHinkley: 3.8 at
# threshold 500, 0.2 at 600; each over 10^7 to 1.2 x 10^8 per-feature updates). The
# false-alarm table measures them again over the whole stationary streams.
ADWIN_DELTA, PAGE_HINKLEY_THRESHOLD = 0.0006, 550.0
ADWIN: Any = drift.ADWIN  # river is untyped
PAGE_HINKLEY: Any = drift.PageHinkley
TUNED = {
    f"river ADWIN (delta={ADWIN_DELTA:g})": lambda: ADWIN(delta=ADWIN_DELTA),
    f"river PageHinkley (threshold={PAGE_HINKLEY_THRESHOLD:g})": lambda: PAGE_HINKLEY(
        threshold=PAGE_HINKLEY_THRESHOLD
    ),
}
RIVER: dict[str, Callable[[], Any]] = {
    "river ADWIN": drift.ADWIN,
    "river PageHinkley": drift.PageHinkley,
    "river KSWIN": lambda: drift.KSWIN(seed=1),
    **TUNED,
}
METHODS = ["streamwatch (CUSUM)", *RIVER, "scipy windowed test"]


def detections(
    method: str, data: np.ndarray, categorical: bool, features: list[int], change: int | None = None
) -> list[tuple[int, int]]:
    if method.startswith("streamwatch"):
        return ours(data, categorical)
    if method.startswith("river"):
        # river's detectors learn online: they see the last events of the reference first
        lead = 500 if method == "river KSWIN" else 2000
        return river_alarms(RIVER[method], data, features, REFERENCE - lead, change)
    return windowed_test(data, categorical, features)


@dataclass
class Row:
    delays: list[int]
    misses: int
    runs: int

    def cell(self, bound: float | None = None) -> str:
        """The median delay (with its ratio to ``bound`` when given) and the misses."""
        if self.runs == 0:
            return "n/a"
        if not self.delays:
            return f"missed {self.misses}/{self.runs}"
        median = int(np.median(self.delays))
        ratio = f" ({median / bound:.2f}x)" if bound else ""
        missed = f", missed {self.misses}/{self.runs}" if self.misses else ""
        return f"{median:,}{ratio}{missed}"


def delay_table(runs: int, seed: int) -> dict[str, dict[str, Row]]:
    """Per scenario and method, the delays; the scenarios in two processes at a time."""
    rows = in_two_processes(_scenario_delays, range(len(SCENARIOS)), runs, seed)
    return {scenario.name: row for scenario, row in zip(SCENARIOS, rows, strict=True)}


def _scenario_delays(index: int, runs: int, seed: int) -> dict[str, Row]:
    scenario = SCENARIOS[index]
    table: dict[str, Row] = {}
    for method in METHODS:
        if scenario.categorical and method.startswith("river"):
            table[method] = Row([], 0, 0)  # river's detectors need numbers
            continue
        # KSWIN costs ~0.6 ms per event: fewer runs, on the changed feature only
        n_runs = min(runs, 3) if method == "river KSWIN" else runs
        row = Row([], 0, n_runs)
        for r in range(n_runs):
            rng = np.random.default_rng(seed * 1000 + r)
            # at a random offset: not on a window boundary of the windowed test
            change = REFERENCE + BEFORE + int(rng.integers(0, 1000))
            data = stream(rng, scenario, change + HORIZON, change)
            hits = [
                i
                for i, j in detections(method, data, scenario.categorical, [0], change)
                if j == 0 and i >= change
            ]
            if hits:
                row.delays.append(min(hits) - change)
            else:
                row.misses += 1
        table[method] = row
        print(f"  {scenario.name:34} {method:34} {row.cell()}", flush=True)
    return table


STATIONARY: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "normal": lambda rng, n: rng.normal(size=(n, FEATURES)),
    "heavy tails (t2)": lambda rng, n: rng.standard_t(2, (n, FEATURES)),
    "skewed (lognormal)": lambda rng, n: rng.lognormal(0, 1.5, (n, FEATURES)),
    "discrete (Poisson 2)": lambda rng, n: rng.poisson(2.0, (n, FEATURES)).astype(float),
}


CHUNK = 500_000  # stationary events generated at a time


def false_alarms(events: int, seed: int) -> list[tuple[str, str, int, int, float]]:
    """(stream, method, events, alarms, alarms per 10^6 events per model), the families in
    two processes at a time (each family's figures do not depend on which runs where)."""
    families = in_two_processes(_family_false_alarms, STATIONARY, events, seed)
    return [row for rows in families for row in rows]


def _family_false_alarms(
    name: str, events: int, seed: int
) -> list[tuple[str, str, int, int, float]]:
    """One stationary family: streamwatch and the tuned river detectors read the whole
    stream, in chunks (the same events for each); the others its first 200,000 events
    (KSWIN 3,000, one feature)."""
    make = STATIONARY[name]

    def chunks() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(seed)  # afresh: every method reads the same events
        yield make(rng, REFERENCE + min(events, CHUNK)).astype(object)
        left = events - min(events, CHUNK)
        while left > 0:
            n = min(left, CHUNK)
            yield make(rng, n).astype(object)
            left -= n

    head = next(chunks())
    out = []
    for method in METHODS:
        features = list(range(FEATURES))
        if method.startswith("streamwatch"):
            n = events
            found = ours_chunks(chunks(), False)
        elif method in TUNED:
            n = events
            found = river_chunks(RIVER[method], chunks(), features, REFERENCE - 2000)
        else:
            if method == "river KSWIN":
                n, features = 3_000, [0]  # ~0.6 ms an event: one feature, scaled by 12 below
            else:  # per-event or per-window: slower
                n = min(events, 200_000)
            found = detections(method, head[: REFERENCE + n], False, features)
        hits = [i for i, _ in found if i >= REFERENCE]
        rate = len(hits) / n * 1e6 * (FEATURES / len(features))
        out.append((name, method, n, len(hits), rate))
        print(
            f"  {name:22} {method:34} {len(hits):5} alarms in {n:,} events -> {rate:,.1f} per 10^6",
            flush=True,
        )
    return out


def calibration(events: int, seed: int) -> list[tuple[float, int, float]]:
    """Observed false-alarm rate of streamwatch at looser budgets, where it is measurable."""
    rng = np.random.default_rng(seed + 1)
    data = rng.normal(size=(REFERENCE + events, FEATURES)).astype(object)
    out = []
    for budget in (1e3, 1e4, 1e5):
        hits = [i for i, _ in ours(data, False, budget) if i >= REFERENCE]
        out.append((budget, len(hits), events / max(len(hits), 1)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=40,
        help="runs per drift scenario (default 40: a median of 10 moves by a third between "
        "seeds on the fastest changes; KSWIN runs at most 3)",
    )
    parser.add_argument(
        "--quality-runs", type=int, default=10, help="runs per quality scenario (default 10)"
    )
    parser.add_argument(
        "--stationary-events",
        type=int,
        default=10_000_000,
        help="events per stationary stream, for streamwatch's false alarms (default 10^7)",
    )
    parser.add_argument(
        "--label-streams",
        type=int,
        default=1000,
        help="stationary outcome streams per error rate, each with its own reference, for "
        "quality false alarms (default 1,000)",
    )
    parser.add_argument(
        "--stationary-labels",
        type=int,
        default=10_000,
        help="labels tested per stationary outcome stream, after its reference (default "
        "10,000: 10^7 per error rate)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.md"))
    args = parser.parse_args()
    started = time.monotonic()
    print("detection delay (median events after the change):", flush=True)
    delays = delay_table(args.runs, args.seed)
    print("false alarms on stationary streams:", flush=True)
    fa = false_alarms(args.stationary_events, args.seed)
    print("calibration (streamwatch at looser budgets):", flush=True)
    calib = calibration(200_000, args.seed)

    lines = [
        "| scenario | Lorden's bound | " + " | ".join(METHODS) + " |",
        "| --- | --- |" + " --- |" * len(METHODS),
    ]
    for scenario in SCENARIOS:
        rows = delays[scenario.name]
        cells = [rows[m].cell(scenario.bound if m == METHODS[0] else None) for m in METHODS]
        lines.append(f"| {scenario.name} | {scenario.bound:,.0f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "False alarms per 10^6 events per model (12 features together):",
        "",
        "| stationary stream | " + " | ".join(METHODS) + " |",
        "| --- |" + " --- |" * len(METHODS),
    ]
    for name in STATIONARY:
        cells = [
            next(
                f"{rate:,.1f} ({hits} in {n:,})"
                for s, m, n, hits, rate in fa
                if s == name and m == method
            )
            for method in METHODS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "streamwatch's budget against what it did (normal stream, 200,000 events):",
        "",
        "| budget: events between false alarms | alarms | observed events per alarm |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {b:,.0f} | {n} | {per:,.0f} |" for b, n, per in calib]
    print("quality alarms (median labels after the change):", flush=True)
    lines += quality.tables(
        args.quality_runs, args.label_streams, args.stationary_labels, args.seed
    )
    lines += [
        "",
        f"{args.runs} runs per drift scenario (KSWIN: {min(args.runs, 3)}, on the changed "
        f"feature only), {args.quality_runs} per quality scenario; seed {args.seed}.",
    ]
    table = "\n".join(lines)
    args.out.write_text(table + "\n")
    print(table)
    print(f"({time.monotonic() - started:,.0f} s; written to {args.out})")


if __name__ == "__main__":
    main()
