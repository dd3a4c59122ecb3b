"""Late labels and a degrading slice, through the real broker and the worker process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from tests.conftest import free_port
from tests.events import T0_MS
from tests.integration.conftest import Topics, WorkerProcess, produce, worker_config

Workers = Callable[[dict[str, Any]], WorkerProcess]


def _events(
    start: int, n: int, rng: np.random.Generator, broken: bool
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """Predictions and their labels; 5% of traffic is Iceland, where a broken model is
    always wrong."""
    predictions, labels = [], []
    for i in range(start, start + n):
        country = "IS" if rng.random() < 0.05 else "DE"
        score = float(rng.random())
        label = bool(rng.random() < score)
        if broken and country == "IS":
            label = score < 0.5
        key = f"p{i}".encode()
        predictions.append(
            (
                key,
                orjson.dumps(
                    {
                        "prediction_id": f"p{i}",
                        "model": "fraud",
                        "model_version": "v1",
                        "timestamp": T0_MS + i * 1000,
                        "features": {"amount": 10.0, "age": 30.0, "country": country},
                        "prediction": score,
                        "attributes": {"country": country},
                    }
                ),
            )
        )
        labels.append(
            (
                key,
                orjson.dumps(
                    {
                        "prediction_id": f"p{i}",
                        "label": label,
                        "timestamp": T0_MS + i * 1000 + int(rng.integers(60_000, 86_400_000)),
                    }
                ),
            )
        )
    order = rng.permutation(len(labels))  # labels arrive out of order
    return predictions, [labels[j] for j in order]


def test_a_degrading_slice_is_seen_in_its_scores_and_its_concept_alarm(
    topics: Topics, workers: Workers
) -> None:
    topics.create(partitions=2)
    rng = np.random.default_rng(5)
    config = worker_config(
        topics,
        free_port(),
        models=[
            {
                "name": "fraud",
                "task": "binary",
                "features": [
                    {"name": "amount", "type": "numeric"},
                    {"name": "age", "type": "numeric"},
                    {"name": "country", "type": "categorical"},
                ],
                "slices": [{"name": "country", "keys": ["country"]}],
            }
        ],
        # Iceland has about 150 labels before it breaks: its reference is its first 100
        quality={
            "windows": [{"events": 100_000}],
            "min_window_events": 20,
            "reference_labels": 100,
        },
    )
    worker = workers(config).start()

    def score(slice_name: str) -> float:
        return worker.sample(
            "streamwatch_window_score",
            model="fraud",
            model_version="v1",
            slice=slice_name,
            score="accuracy",
            window="events_100000",
        )

    def labelled() -> float:
        return worker.sample(
            "streamwatch_labelled_events_total", model="fraud", model_version="v1", slice="__all__"
        )

    def concept_alarms() -> float:
        return worker.sample(
            "streamwatch_concept_drift_alarms_total",
            model="fraud",
            model_version="v1",
            slice="country=IS",
            detector="cusum",
        )

    predictions, labels = _events(0, 3000, rng, broken=False)
    early = labels[:50]  # some labels come before their predictions
    produce(topics.bootstrap, topics.labels, early)
    produce(topics.bootstrap, topics.predictions, predictions)
    produce(topics.bootstrap, topics.labels, labels[50:])
    worker.wait_for(lambda: labelled() == 3000, timeout=90)
    healthy = {s: score(s) for s in ("__all__", "country=IS", "country=DE")}
    assert concept_alarms() == 0
    assert worker.sample("streamwatch_labels_unmatched_total") == 0

    predictions, labels = _events(3000, 6000, rng, broken=True)
    produce(topics.bootstrap, topics.predictions, predictions)
    produce(topics.bootstrap, topics.labels, labels)
    worker.wait_for(lambda: labelled() == 9000, timeout=90)
    degraded = {s: score(s) for s in ("__all__", "country=IS", "country=DE")}

    iceland_drop = healthy["country=IS"] - degraded["country=IS"]
    global_drop = healthy["__all__"] - degraded["__all__"]
    assert iceland_drop > 0.3
    assert global_drop < iceland_drop / 3
    assert abs(degraded["country=DE"] - healthy["country=DE"]) < 0.05
    assert concept_alarms() >= 1
    assert worker.sample("streamwatch_label_delay_seconds_count", model="fraud") == 9000
    assert worker.sample("streamwatch_predictions_pending", model="fraud") == 0
    assert worker.stop() == 0
