"""Partitions: the same stream read from 1, 4 and 12 partitions gives the same alarms, and
what the one order costs.

    .venv/bin/python bench/partitions/run.py [--events 40000]

The demo's stream with a drift (amount, from event ``events/2``) and a concept change in one
slice (a third of the labels in country=US flip, from event ``5*events/8``), its messages
spread over P partitions by prediction id as Kafka's key hash would, and read in fetches of
one partition at a time (a random partition, 500 messages), through the worker's pipeline
(decode, admission, event order, engine), all in one process and one run:

* the first drift alarm and the first concept alarm in the slice, as events after the change;
* every alarm, compared with P = 1, and how many records the event order forced out (more
  than ``event_time.max_waiting_events`` waiting; raised here, see ``MAX_WAITING``);
* messages per second through the pipeline, and through the same pipeline with the records
  of each fetch applied in arrival order (no event order: what one partition's results would
  then depend on), side by side.

Writes ``bench/partitions/results.md``.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path
from typing import Any

import yaml

from streamwatch.app import build
from streamwatch.config import parse_settings
from streamwatch.progress import Progress
from streamwatch.records import Record
from streamwatch.simulation import DEMO_CONFIG, Scenario, spread

HERE = Path(__file__).parent
FETCH = 500
# Random fetches starve some partitions for a while: from 12 partitions, more than the
# default 50,000 records wait for them at times, and the event order's safety valve would
# force the oldest out of order. The valve is for a stalled partition, which these are not.
MAX_WAITING = 200_000


def _fetches(scenario: Scenario, partitions: int, seed: int) -> list[list[Record]]:
    queues = spread(scenario.records(), partitions)
    rng = random.Random(seed)
    fetches = []
    while any(queues.values()):
        chosen = rng.choice([k for k, q in queues.items() if q])
        fetches.append(queues[chosen][:FETCH])
        del queues[chosen][:FETCH]
    return fetches


def _run(scenario: Scenario, partitions: int, ordered: bool) -> dict[str, Any]:
    config = yaml.safe_load(yaml.safe_dump(DEMO_CONFIG))
    config.setdefault("event_time", {})["max_waiting_events"] = MAX_WAITING
    app = build(parse_settings(config))
    pipeline = app.pipeline
    fetches = _fetches(scenario, partitions, seed=partitions)
    topics = {(r.topic(), r.partition()) for fetch in fetches for r in fetch}
    pipeline.order.assign(topics, 0.0)
    left = {
        k: sum(1 for f in fetches for r in f if (r.topic(), r.partition()) == k) for k in topics
    }
    alarms, concept = [], []
    messages = sum(len(f) for f in fetches)
    started = time.perf_counter()
    for fetch in fetches:
        for r in fetch:
            left[(r.topic(), r.partition())] -= 1
        if ordered:
            outcome = pipeline.process(fetch, None, now=0.0, lags=left)
        else:  # the same stages, each fetch applied as it comes
            decoded = pipeline.decode(fetch)
            pipeline.reject(decoded.rejected, None)
            outcome = pipeline.apply(decoded)
        alarms += outcome.alarms
        concept += outcome.concept_alarms
    outcome = pipeline.drain()
    seconds = time.perf_counter() - started
    alarms += outcome.alarms
    concept += outcome.concept_alarms
    start = scenario.start
    drift_at = start + scenario.drift_at * scenario.spacing_seconds
    concept_at = start + (scenario.concept_at or 0) * scenario.spacing_seconds
    first_drift = min((a.event_time for a in alarms if a.event_time >= drift_at), default=None)
    us = [c.event_time for c in concept if c.slice == "country=US" and c.event_time >= concept_at]
    return {
        "alarms": sorted((a.event_time, a.slice, a.feature, a.detector) for a in alarms),
        "concept": sorted((c.event_time, c.slice, c.detector) for c in concept),
        "first_drift": None if first_drift is None else (first_drift - drift_at),
        "first_us": None if not us else (min(us) - concept_at),
        "rate": messages / seconds,
        "forced": sum(
            app.registry.get_sample_value("streamwatch_events_forced_total", {"topic": t}) or 0
            for t in pipeline.order.topics
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40_000, help="predictions in the stream")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the alarms are counted here, not logged
    n = args.events
    scenario = Scenario(events=n, drift_at=n // 2, concept_at=5 * n // 8, seed=5)
    rows: list[str] = []
    progress = Progress(6, "partitions")
    reference: dict[str, Any] | None = None
    for partitions in (1, 4, 12):
        result = {ordered: _run(scenario, partitions, ordered) for ordered in (True, False)}
        progress.update(len(rows) * 2 + 2)
        mine = result[True]
        if reference is None:
            reference = mine
        same = mine["alarms"] == reference["alarms"] and mine["concept"] == reference["concept"]
        loose = result[False]
        loose_same = (
            loose["alarms"] == reference["alarms"] and loose["concept"] == reference["concept"]
        )
        rows.append(
            f"| {partitions} | {_s(mine['first_drift'])} | {_s(mine['first_us'])} "
            f"| {len(mine['alarms'])} + {len(mine['concept'])} | {mine['forced']:,.0f} "
            f"| {'yes' if same else 'no'} "
            f"| {'yes' if loose_same else 'no'} ({_s(loose['first_us'])}) "
            f"| {mine['rate']:,.0f} | {loose['rate']:,.0f} | {mine['rate'] / loose['rate']:.2f} |"
        )
    progress.close()
    table = "\n".join(
        [
            f"Stream: {n:,} predictions and their labels (demo scenario, seed 5); fetches of "
            f"{FETCH} messages from a random partition; `event_time.max_waiting_events: "
            f"{MAX_WAITING:,}`; one process, one run.",
            "",
            "| partitions | first drift alarm (s after the change) | first concept alarm "
            "in country=US (s after) | alarms (drift + concept) | records forced out of order "
            "| same alarms as 1 partition "
            "| without the event order: same? (first US alarm) | messages/s with the order "
            "| messages/s without | ratio |",
            "| ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |",
            *rows,
        ]
    )
    (HERE / "results.md").write_text(table + "\n")
    print(table)


def _s(value: float | None) -> str:
    return "none" if value is None else f"{value:,.0f}"


if __name__ == "__main__":
    main()
