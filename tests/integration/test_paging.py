"""A real page, end to end: broker → worker → Prometheus (shipped rules) → Alertmanager
(shipped routing) → a webhook served here.

Prometheus scrapes every second and evaluates every second. The shipped rules are loaded
with each ``for:`` hold scaled down 60 times (5m → 5s), so that a test does not wait five
minutes; their expressions are unchanged. Alertmanager runs the shipped routing with both
receivers pointed at this test's webhook.

Four models share one worker, one per scenario, so that their alerts do not mix:
``drift`` (a feature drifts: it pages), ``slice`` (quality falls in a 5% slice only: that
slice pages, the whole version does not), ``stale`` (predictions stop: the staleness page
comes and the drift alert of that model is inhibited) and ``calm`` (stationary: no page).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from tests.conftest import free_port
from tests.integration.conftest import Topics, WorkerProcess, produce, worker_config
from tests.integration.prometheus import DEPLOY, Servers, Webhook, wait

FEATURES = [
    {"name": "amount", "type": "numeric"},
    {"name": "age", "type": "numeric"},
    {"name": "country", "type": "categorical"},
]
ZERO_ALARMS = 'streamwatch_drift_alarms_total{model="%s", feature="amount"} == 0'
COUNTRIES = ["DE", "FR", "US", "ES", "IT", "NL", "PL", "SE", "BE", "AT"]  # IS: 5% of traffic


def _events(
    model: str,
    start: int,
    n: int,
    seed: int,
    shift: float = 0.0,
    age_s: float = 0.0,
    iceland_fails: bool = False,
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """Predictions (event time: now - age_s) and their labels: right 97% of the time, except
    in country IS (5% of traffic) when ``iceland_fails``: always wrong there."""
    rng = np.random.default_rng(seed)
    now_ms = int((time.time() - age_s) * 1000)
    predictions, labels = [], []
    for k in range(n):
        i = start + k
        country = "IS" if i % 20 == 0 else COUNTRIES[i % len(COUNTRIES)]
        positive = bool(rng.random() < 0.3)
        right = not (iceland_fails and country == "IS") and rng.random() < 0.97
        score = (0.95 if positive else 0.05) if right else (0.05 if positive else 0.95)
        pid = f"{model}-{i}"
        predictions.append(
            (
                pid.encode(),
                orjson.dumps(
                    {
                        "prediction_id": pid,
                        "model": model,
                        "model_version": "v1",
                        "timestamp": now_ms - (n - k) * 10,
                        "features": {
                            "amount": float(rng.normal(100 + 15 * shift, 15)),
                            "age": float(rng.normal(40, 10)),
                            "country": country,
                        },
                        "prediction": score,
                        "attributes": {"country": country},
                    }
                ),
            )
        )
        labels.append(
            (
                pid.encode(),
                orjson.dumps({"prediction_id": pid, "label": positive, "timestamp": now_ms}),
            )
        )
    return predictions, labels


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Topics, WorkerProcess, Servers, Webhook]]:
    folder = tmp_path_factory.mktemp("paging")
    topics = Topics(kafka_bootstrap).create(partitions=2)
    port = free_port()
    config = worker_config(
        topics,
        port,
        drift={"windows": [{"events": 500}], "min_window_events": 100},
        # the slice model's Iceland has 100 labels before it fails: its reference
        quality={"windows": [{"events": 200}], "min_window_events": 50, "reference_labels": 100},
    )
    slices = [{"name": "country", "keys": ["country"], "max_values": 20}]
    config["models"] = [
        {
            "name": name,
            "task": "binary",
            "features": FEATURES,
            "reference": {"warmup_events": 500},
            "objectives": {"accuracy": 0.9},
            "slices": slices if name == "slice" else [],
        }
        for name in ("drift", "slice", "stale", "calm")
    ]
    worker = WorkerProcess(config, folder).start()
    webhook = Webhook()
    servers = Servers(folder, port, webhook).start()
    try:
        worker.wait_for(lambda: worker.get("/readyz")[0] == 200)
        yield topics, worker, servers, webhook
    finally:
        servers.stop()
        worker.kill()
        webhook.server.shutdown()
        webhook.server.server_close()


def _first_page(webhook: Webhook, timeout: float, **labels: str) -> float:
    wait(lambda: bool(webhook.pages(**labels)), timeout, f"a page for {labels}")
    return webhook.pages(**labels)[0][0]


def test_a_feature_drift_pages_with_what_drifted(stack: Any) -> None:
    topics, worker, servers, webhook = stack
    calm, _ = _events("calm", 0, 3000, seed=9)
    produce(topics.bootstrap, topics.predictions, calm)  # scenario 4 runs beside the others
    before, _ = _events("drift", 0, 2000, seed=1)
    produce(topics.bootstrap, topics.predictions, before)
    worker.wait_for(
        lambda: (
            worker.sample("streamwatch_events_total", topic=topics.predictions, model="drift")
            == 2000
        )
    )
    # Prometheus has seen the alarm counters at 0 (as it does during any real warm-up)
    wait(lambda: bool(servers.query(ZERO_ALARMS % "drift")), 60, "a scrape of the counters")
    drifted, _ = _events("drift", 2000, 1500, seed=2, shift=1.0)
    changed = time.monotonic()
    produce(topics.bootstrap, topics.predictions, drifted)
    paged = _first_page(webhook, 120, alertname="StreamwatchFeatureDrift", model="drift")
    _, path, alert = webhook.pages(alertname="StreamwatchFeatureDrift", model="drift")[0]
    assert path == "/pager"
    assert alert["labels"]["model_version"] == "v1"
    assert alert["labels"]["feature"] == "amount"
    assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#streamwatchfeaturedrift"
    assert "amount (cusum" in alert["annotations"]["description"]  # the top drifting signal
    print(f"\nfeature drift: first changed event to page in {paged - changed:.1f} s")


def test_quality_falling_in_a_slice_pages_that_slice_only(stack: Any) -> None:
    topics, worker, servers, webhook = stack
    predictions, labels = _events("slice", 0, 2000, seed=3)
    produce(topics.bootstrap, topics.predictions, predictions)
    produce(topics.bootstrap, topics.labels, labels)
    worker.wait_for(
        lambda: (
            worker.sample(
                "streamwatch_labelled_events_total",
                model="slice",
                model_version="v1",
                slice="__all__",
            )
            == 2000
        )
    )
    assert not webhook.pages(model="slice")
    predictions, labels = _events("slice", 2000, 3000, seed=6, iceland_fails=True)
    changed = time.monotonic()
    produce(topics.bootstrap, topics.predictions, predictions)
    produce(topics.bootstrap, topics.labels, labels)
    paged = _first_page(
        webhook, 120, alertname="StreamwatchSliceBelowObjective", model="slice", slice="country=IS"
    )
    pages = webhook.pages(model="slice")
    below = {p[2]["labels"]["slice"] for p in pages if "Objective" in p[2]["labels"]["alertname"]}
    assert below == {"country=IS"}
    assert not [p for p in pages if "ErrorBudget" in p[2]["labels"]["alertname"]]
    # the slice's error stream raised a concept-drift alarm too (it may page on its own)
    wait(
        lambda: bool(
            servers.query(
                'streamwatch_concept_drift_alarms_total{model="slice", slice="country=IS"} > 0'
            )
        ),
        60,
        "the slice's concept-drift alarm",
    )
    whole = servers.query(
        'streamwatch_window_score{model="slice", slice="__all__", score="accuracy"}'
    )
    assert whole
    assert float(whole[0]["value"][1]) > 0.9  # the version as a whole meets its objective
    print(f"\nslice quality: first labelled event to page in {paged - changed:.1f} s")


def test_stopped_predictions_page_and_mute_the_drift_alert(stack: Any) -> None:
    topics, _, servers, webhook = stack
    # the model's events are 30 minutes old and nothing newer comes: its predictions stopped
    old, _ = _events("stale", 0, 2000, seed=4, age_s=1800)
    changed = time.monotonic()
    produce(topics.bootstrap, topics.predictions, old)
    paged = _first_page(webhook, 120, alertname="StreamwatchPredictionsStale", model="stale")
    wait(lambda: bool(servers.query(ZERO_ALARMS % "stale")), 60, "a scrape of the counters")
    drifted, _ = _events("stale", 2000, 1500, seed=5, shift=1.0, age_s=1700)
    produce(topics.bootstrap, topics.predictions, drifted)
    # Prometheus fires the drift alert; Alertmanager holds it back
    wait(
        lambda: any(
            a["labels"]["alertname"] == "StreamwatchFeatureDrift"
            and a["labels"].get("model") == "stale"
            and a["status"]["inhibitedBy"]
            for a in servers.alertmanager_alerts()
        ),
        120,
        "the stale model's drift alert, inhibited",
    )
    time.sleep(15)  # past the critical route's group_wait: a page would have come by now
    assert not webhook.pages(alertname="StreamwatchFeatureDrift", model="stale")
    print(f"\npredictions stopped: first stale event to page in {paged - changed:.1f} s")


def test_a_stationary_stream_pages_no_one(stack: Any) -> None:
    _, _, _, webhook = stack
    # the calm model's stream ran beside every scenario above
    assert [p for p in webhook.received if p[2]["labels"].get("model") == "calm"] == []
    assert [
        p for p in webhook.received if p[2]["labels"]["alertname"].startswith("StreamwatchWorker")
    ] == []


def _grafana(expr: str) -> str:
    """A dashboard query as Prometheus takes it: Grafana's variables at their widest."""
    for variable, value in {
        "$__rate_interval": "1m",
        "$__interval": "10m",
        "$model": ".*",
        "$version": ".*",
    }.items():
        expr = expr.replace(variable, value)
    return expr


def test_every_dashboard_query_returns_data(stack: Any) -> None:
    """Each panel's main query (and each annotation's) against the live Prometheus, after the
    scenarios above. The 'a week earlier' overlay (offset 1w) is the one query left out: a
    Prometheus younger than a week has nothing there yet."""
    _, _, servers, _ = stack
    dashboard = json.loads((DEPLOY / "grafana/dashboards/streamwatch.json").read_text())
    queries = [
        (panel["title"], panel["targets"][0]["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
    ]
    queries += [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"]]
    assert len(queries) == 15
    wait(lambda: bool(servers.query("streamwatch:accuracy_error_ratio:rate1h")), 60, "rules")
    empty = [title for title, expr in queries if not servers.query(_grafana(expr))]
    assert not empty, f"panels without data: {empty}"


def test_promtool_has_nothing_to_say_about_the_live_scrape(stack: Any) -> None:
    _, worker, _, _ = stack
    _, text = worker.get("/metrics")
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""
