"""Simulation: a seeded production stream with a known drift, for the demo and the tests.

A fraud model serves one prediction per second of event time. From event ``drift_at`` on,
the ``amount`` feature's distribution shifts (its log-mean rises by ``shift``), and so do
the model's scores. Labels follow their predictions after a random delay (minutes to hours),
and a few malformed messages are mixed in, as in real traffic.
"""

from __future__ import annotations

import csv
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from streamwatch.records import Record

MODEL = "fraud-detector"
VERSION = "2026.11.1"
START_SECONDS = 1_790_000_000.0  # event time of the first prediction

#: The embedded default configuration of the demo (see docs/configuration.md).
DEMO_CONFIG: dict[str, object] = {
    # The simulated stream starts at a fixed moment (START_SECONDS), so that its output is
    # the same on every run; a long demo may run past the wall clock, which it may.
    "event_time": {"max_future_seconds": 10 * 365 * 86400},
    "topics": {
        "predictions": "demo-predictions",
        "labels": "demo-labels",
        "dead_letters": "demo-dead-letters",
    },
    "models": [
        {
            "name": MODEL,
            "task": "binary",
            "features": [
                {"name": "amount", "type": "numeric"},
                {"name": "account_age_days", "type": "numeric"},
                {"name": "items", "type": "numeric"},
                {"name": "country", "type": "categorical"},
            ],
            "reference": {"warmup_events": 5000},
            "slices": [{"name": "country", "keys": ["country"]}],
        }
    ],
    "drift": {
        "false_alarm_budget_events": 1_000_000,
        "windows": [{"events": 2000}, {"seconds": 3600}, {"seconds": 86400}],
    },
    # the demo's stream spans hours: a sliding day shows it all, a tumbling hour its hours
    "quality": {
        "windows": [{"events": 1000}, {"seconds": 3600, "tumbling": True}, {"seconds": 86400}]
    },
    "worker": {"batch_size": 2000},
}


@dataclass(frozen=True)
class Scenario:
    events: int = 60_000
    drift_at: int = 30_000
    shift: float = 0.6  # added to log(amount): a 1.8x larger typical amount
    invalid_every: int = 1000  # one malformed message per this many predictions
    seed: int = 7
    predictions_topic: str = "demo-predictions"
    labels_topic: str = "demo-labels"
    start: float = START_SECONDS  # event time of the first prediction
    spacing_seconds: float = 1.0  # event time between predictions
    # a concept change: from this prediction on, a third of the labels in one country flip
    # (the model goes wrong there, its inputs unchanged); None: no change
    concept_at: int | None = None
    concept_country: str = "US"
    # the countries (the demo's slice) and their shares of the traffic
    countries: tuple[tuple[str, float], ...] = (
        ("DE", 0.3),
        ("FR", 0.2),
        ("US", 0.3),
        ("BR", 0.1),
        ("IN", 0.1),
    )

    def records(self) -> Iterator[Record]:
        """The stream in arrival order: predictions, late labels and malformed messages."""
        rng = np.random.default_rng(self.seed)
        n = self.events
        shifted = np.arange(n) >= self.drift_at
        log_amount = rng.normal(3.5, 1.0, n) + np.where(shifted, self.shift, 0.0)
        amount = np.round(np.exp(log_amount), 2)
        age = np.round(rng.gamma(2.0, 200.0, n), 1)
        items = rng.poisson(2.0, n) + 1
        names, shares = zip(*self.countries, strict=True)
        country = rng.choice(np.array(names), n, p=list(shares))
        logit = -4.0 + 0.6 * (log_amount - 3.5) - 0.002 * age + 0.2 * items
        score = 1.0 / (1.0 + np.exp(-logit))
        fraud = rng.random(n) < score
        times = self.start + self.spacing_seconds * np.arange(n, dtype=np.float64)
        label_times = times + rng.exponential(1800.0, n)  # labels come ~30 min later on average
        if self.concept_at is not None:
            flip = (rng.random(n) < 1 / 3) & (country == self.concept_country)
            fraud ^= flip & (np.arange(n) >= self.concept_at)
        pending: list[tuple[float, int]] = []  # (arrival time, index), a heap
        for i in range(n):
            while pending and pending[0][0] <= times[i]:
                _, j = heapq.heappop(pending)
                yield self._label(j, bool(fraud[j]), float(label_times[j]))
            pid = f"p-{i:08d}"
            yield Record(
                self.predictions_topic,
                orjson.dumps(
                    {
                        "prediction_id": pid,
                        "model": MODEL,
                        "model_version": VERSION,
                        "timestamp": int(times[i] * 1000),
                        "features": {
                            "amount": float(amount[i]),
                            "account_age_days": float(age[i]),
                            "items": int(items[i]),
                            "country": str(country[i]),
                        },
                        "prediction": round(float(score[i]), 6),
                        "attributes": {"country": str(country[i])},
                    }
                ),
                pid.encode(),
            )
            heapq.heappush(pending, (float(label_times[i]), i))
            if self.invalid_every and i % self.invalid_every == self.invalid_every - 1:
                yield Record(self.predictions_topic, self._malformed(i), pid.encode())
        while pending:
            _, j = heapq.heappop(pending)
            yield self._label(j, bool(fraud[j]), float(label_times[j]))

    def _label(self, i: int, fraud: bool, at: float) -> Record:
        pid = f"p-{i:08d}"
        return Record(
            self.labels_topic,
            orjson.dumps({"prediction_id": pid, "label": fraud, "timestamp": int(at * 1000)}),
            pid.encode(),
        )

    @staticmethod
    def _malformed(i: int) -> bytes:
        kinds = [
            b'{"prediction_id": "broken", "model": ',  # truncated JSON
            orjson.dumps({"prediction_id": f"x-{i}", "model": "unknown-model"}),
            orjson.dumps(
                {
                    "prediction_id": f"y-{i}",
                    "model": MODEL,
                    "model_version": "1",
                    "timestamp": "yesterday",
                    "features": {},
                    "prediction": 0.5,
                }
            ),
        ]
        return kinds[(i // 1000) % len(kinds)]


def spread(records: Iterable[Record], partitions: int) -> dict[tuple[str, int], list[Record]]:
    """Messages spread over ``partitions`` of their topic by their key (the prediction id's
    number), as producers keying by id spread them, each with its partition and offset."""
    queues: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        key = r.key() or b""
        p = int(key.decode().rsplit("-", 1)[1]) % partitions if key else 0
        queue = queues.setdefault((r.topic(), p), [])
        queue.append(Record(r.topic(), r.value(), r.key(), p, len(queue)))
    return queues


def record(scenario: Scenario, folder: Path, training_rows: int = 20_000) -> dict[str, int]:
    """Write the scenario as files: ``predictions.jsonl`` and ``labels.jsonl`` (one message
    value per line, in arrival order) and ``training.csv`` (flat rows of the model's
    pre-drift data with its predictions, as a training set would have them)."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {"predictions.jsonl": 0, "labels.jsonl": 0, "training.csv": 0}
    with (folder / "predictions.jsonl").open("wb") as p, (folder / "labels.jsonl").open("wb") as lb:
        for r in scenario.records():
            value = r.value() or b""
            is_prediction = r.topic() == scenario.predictions_topic
            (p if is_prediction else lb).write(value + b"\n")
            counts["predictions.jsonl" if is_prediction else "labels.jsonl"] += 1
    training = Scenario(
        events=training_rows, drift_at=training_rows, invalid_every=0, seed=scenario.seed + 1
    )
    with (folder / "training.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["amount", "account_age_days", "items", "country", "prediction"])
        for r in training.records():
            if r.topic() != training.predictions_topic:
                continue
            event = orjson.loads(r.value() or b"{}")
            x = event["features"]
            writer.writerow(
                [x["amount"], x["account_age_days"], x["items"], x["country"], event["prediction"]]
            )
            counts["training.csv"] += 1
    return counts
