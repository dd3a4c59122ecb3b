"""One activity clock: a model version's drift and quality series leave /metrics together.

Version v1 stops predicting while v2 goes on; v1's labels keep coming for a while. The
drift side used to count predictions only, so v1's drift series left while its labels still
kept its quality series: a dashboard showed a version half gone.
"""

from __future__ import annotations

import orjson
import yaml

from streamwatch.app import build
from streamwatch.config import parse_settings
from streamwatch.records import Record
from tests.events import T0_MS, prediction

CONFIG = {
    "models": [
        {
            "name": "fraud",
            "task": "binary",
            "features": [
                {"name": "amount", "type": "numeric"},
                {"name": "age", "type": "numeric"},
                {"name": "country", "type": "categorical"},
            ],
            "reference": {"warmup_events": 50},
        }
    ],
    "drift": {"windows": [{"events": 100}], "min_window_events": 10},
    "quality": {"windows": [{"events": 100}], "min_window_events": 10},
    "exporter": {"retire_after_seconds": 600},
}


def _present(app: object, version: str) -> tuple[bool, bool]:
    pipeline = app.pipeline  # type: ignore[attr-defined]
    drift = any(row[1] == version for row in pipeline.monitor.snapshot().windows)
    quality = any(row[1] == version for row in pipeline.quality.snapshot().scores)
    return drift, quality


def test_a_version_leaves_the_drift_and_the_quality_series_together() -> None:
    app = build(parse_settings(yaml.safe_load(yaml.safe_dump(CONFIG))))
    offset = {"predictions": 0, "labels": 0}

    def send(topic: str, bodies: list[dict[str, object]]) -> None:
        records = []
        for body in bodies:
            records.append(Record(topic, orjson.dumps(body), None, 0, offset[topic]))
            offset[topic] += 1
        app.pipeline.process(records, None)
        app.pipeline.drain()  # applied at once: these tests are about retirement, not order

    def label(i: int, at: int) -> dict[str, object]:
        return {"prediction_id": f"p{i}", "label": False, "timestamp": T0_MS + at * 1000}

    send("predictions", [prediction(i, version="v1") for i in range(200)])
    send("labels", [label(i, i + 1) for i in range(100)])
    assert _present(app, "v1") == (True, True)
    # v2 carries the model's clock 20 minutes on; v1's late labels keep coming meanwhile
    for step in range(1, 5):
        start = 200 + 300 * step
        send("predictions", [prediction(i, version="v2") for i in range(start, start + 300)])
        send("labels", [label(i, start) for i in range(100 + step * 20, 120 + step * 20)])
        assert _present(app, "v1") == (True, True), f"step {step}"
    # v1's labels stop: after retire_after_seconds both sides forget it at once
    for step in range(5, 9):
        start = 200 + 300 * step
        send("predictions", [prediction(i, version="v2") for i in range(start, start + 300)])
    assert _present(app, "v1") == (False, False)
    assert _present(app, "v2") == (True, False)  # v2 has no labels: no quality scores
