"""Labels and slices: the join store's memory, bounded slices, and the estimate's accuracy.

    .venv/bin/python bench/labels/run.py [--pending 1000000]

1. Bytes per pending prediction: the real label side (``Quality``) holds ``--pending``
   predictions waiting for labels (ids like ``txn-0000000042``, one slice); memory retained,
   measured with tracemalloc, divided by the count. Also: objects the cyclic garbage
   collector tracks, and the time of a full collection, with the store full.
2. Bounded slices: 10^6 labelled predictions with 10 slice values, with 10^6 distinct ones,
   and with 10^6 distinct ones between 60 frequent ones (half the traffic): tracked values
   (at most 50, the frequent ones), exported series and retained memory stay bounded.
3. The estimate before labels: a calibrated binary model whose input drifts (so its accuracy
   changes); per hour of event time, estimated accuracy against realized accuracy.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from streamwatch.config import parse_settings
from streamwatch.exporter import QualityCollector
from streamwatch.quality import Quality
from streamwatch.records import Label, Prediction

T0 = 1_790_000_000.0
BATCH = 10_000


def settings(max_values: int = 50, windows: Any = None) -> Any:
    return parse_settings(
        {
            "models": [
                {
                    "name": "m",
                    "task": "binary",
                    "features": [{"name": "x", "type": "numeric"}],
                    "slices": [{"name": "country", "keys": ["country"], "max_values": max_values}],
                }
            ],
            "quality": {"windows": windows or [{"events": 10_000}, {"seconds": 3600}]},
        }
    )


def feed(quality: Quality, n: int, country: Any, seconds_apart: float = 0.01) -> None:
    for start in range(0, n, BATCH):
        batch = [
            Prediction(
                f"txn-{i:010d}",
                "m",
                "v1",
                T0 + i * seconds_apart,
                {"x": 1.0},
                0.3,
                None,
                None,
                {"country": country(i)},
                0,
                i,
            )
            for i in range(start, min(n, start + BATCH))
        ]
        quality.apply(batch, [])


def retained(build: Any) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return result, after - before


def _gc_pause() -> float:
    started = time.perf_counter()
    gc.collect()
    return time.perf_counter() - started


def pending_memory(n: int) -> list[str]:
    def build() -> Quality:
        q = Quality(settings())
        feed(q, n, lambda i: ["DE", "FR", "US"][i % 3])
        return q

    pause_empty = _gc_pause()
    tracked_before = len(gc.get_objects())
    quality, size = retained(build)
    tracked_after = len(gc.get_objects())
    pause_full = _gc_pause()
    assert quality.snapshot().pending == {"m": n}
    return [
        f"| pending predictions | {n:,} |",
        f"| retained memory | {size / 2**20:,.1f} MiB |",
        f"| bytes per pending prediction | {size / n:,.0f} |",
        f"| objects the garbage collector tracks, added | {tracked_after - tracked_before:,} |",
        f"| full collection, before and with the store full | {pause_empty * 1000:,.0f} ms,"
        f" {pause_full * 1000:,.0f} ms |",
    ]


def bounded_slices(n: int, distinct: int, frequent: int = 0) -> tuple[int, int, float]:
    """(tracked values, exported series, retained MiB) after n labelled predictions with
    ``distinct`` slice values (and, every other event, one of ``frequent`` values), labels
    following their predictions batch by batch."""

    def country(i: int) -> str:
        if frequent and i % 2 == 0:
            return f"f{(i // 2) % frequent}"
        return f"c{i % distinct}"

    def build() -> Quality:
        q = Quality(settings(max_values=50))
        for start in range(0, n, BATCH):
            ids = range(start, min(n, start + BATCH))
            q.apply(
                [
                    Prediction(
                        f"txn-{i:010d}",
                        "m",
                        "v1",
                        T0 + i * 0.01,
                        {"x": 1.0},
                        0.3,
                        None,
                        None,
                        {"country": country(i)},
                        0,
                        i,
                    )
                    for i in ids
                ],
                [Label(f"txn-{i:010d}", 1.0, T0 + i * 0.01, 0, i) for i in ids],
            )
            q.take_label_delays()  # the worker drains these into its histogram
        return q

    quality, size = retained(build)
    registry = CollectorRegistry()
    registry.register(QualityCollector(quality))
    series = sum(len(m.samples) for m in registry.collect())
    return len(quality.slicers["m"].tracked[0]), series, size / 2**20


def estimate(seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    q = Quality(settings(windows=[{"seconds": 3600}]))
    rows = [
        "| hour | predictions | realized accuracy | estimated before the labels | error |",
        "| --- | --- | --- | --- | --- |",
    ]
    per_hour = 3600
    worst = 0.0
    for hour in range(8):
        # the input drifts: the mean score climbs towards 0.5, so the model is right less often
        mean = 0.08 + 0.05 * hour
        scores = rng.beta(20 * mean, 20 * (1 - mean), per_hour)
        labels = rng.random(per_hour) < scores  # calibrated: P(label | score) = score
        base = hour * per_hour
        q.apply(
            [
                Prediction(
                    f"h{base + i}",
                    "m",
                    "v1",
                    T0 + base + i,
                    {"x": 1.0},
                    float(scores[i]),
                    None,
                    None,
                    {"country": "DE"},
                    0,
                    base + i,
                )
                for i in range(per_hour)
            ],
            [],
        )
        estimated = next(
            v
            for (*_, sl, s, w, v) in q.snapshot().estimated
            if sl == "__all__" and s == "accuracy" and w == "1h"
        )
        q.apply(
            [],
            [
                Label(f"h{base + i}", float(labels[i]), T0 + base + i + 60, 0, 0)
                for i in range(per_hour)
            ],
        )
        q.take_label_delays()
        realized = float(np.mean((scores >= 0.5) == labels))
        worst = max(worst, abs(estimated - realized))
        rows.append(
            f"| {hour} | {per_hour:,} | {realized:.3f} | {estimated:.3f} | "
            f"{estimated - realized:+.3f} |"
        )
    rows.append(f"\nLargest error: {worst:.3f}.")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pending", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.md"))
    args = parser.parse_args()
    started = time.monotonic()
    lines = [
        "| join store | |",
        "| --- | --- |",
        *pending_memory(args.pending),
        "",
        "| 10^6 labelled predictions | slice values tracked | exported series | retained memory |",
        "| --- | --- | --- | --- |",
    ]
    for distinct, frequent in ((10, 0), (1_000_000, 0), (1_000_000, 60)):
        tracked, series, mib = bounded_slices(1_000_000, distinct, frequent)
        among = f" among {frequent} frequent ones" if frequent else ""
        lines.append(
            f"| {distinct:,} distinct slice values{among} | {tracked} | {series:,} |"
            f" {mib:,.1f} MiB |"
        )
    lines += [
        "",
        "Estimated against realized accuracy, per hour (a calibrated model whose input drifts):",
        "",
        *estimate(args.seed),
    ]
    text = "\n".join(lines)
    args.out.write_text(text + "\n")
    print(text)
    print(f"({time.monotonic() - started:,.0f} s; written to {args.out})")


if __name__ == "__main__":
    main()
