"""The worker on a real broker, as a separate process, observed through /metrics and Kafka."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from tests.conftest import ROOT, free_port
from tests.events import T0_MS, label, prediction, stream
from tests.integration.conftest import Topics, WorkerProcess, consume_all, produce, worker_config

Workers = Callable[[dict[str, Any]], WorkerProcess]
PRED = "streamwatch_events_total"


def _bad(event: dict[str, Any], **changes: Any) -> bytes:
    return orjson.dumps({**event, **changes})


def invalid_predictions() -> list[tuple[bytes | None, str]]:
    """One message per rejection reason the predictions topic can produce."""
    ok = prediction(10_000)
    no_id = {k: v for k, v in ok.items() if k != "prediction_id"}
    return [
        (b"this is not json", "not_json"),
        (b'{"prediction_id": "\xff\xfe"}', "invalid_utf8"),
        (b"[1, 2, 3]", "not_object"),
        (b'{"prediction_id": "p", "amount": 1e999}', "non_finite"),
        (b"[" * 2000 + b"]" * 2000, "too_deep"),
        (b'{"pad": "' + b"x" * 20_000 + b'"}', "too_large"),
        (orjson.dumps(no_id), "missing_field"),
        (_bad(ok, features={"amount": "12", "age": 3, "country": "DE"}), "wrong_type"),
        (_bad(ok, prediction=1.5), "out_of_range"),
        (_bad(ok, timestamp="yesterday"), "bad_timestamp"),
        (_bad(ok, model="someone-elses-model"), "unknown_model"),
        (None, "empty"),
    ]


def test_counts_dead_letters_and_documented_metrics(topics: Topics, workers: Workers) -> None:
    topics.create(partitions=2)
    valid = stream(0, 300, seed=1)
    bad = invalid_predictions()
    produce(topics.bootstrap, topics.predictions, valid)
    produce(
        topics.bootstrap,
        topics.predictions,
        [(b"bad", v) for v, _ in bad],
        headers=[("trace-id", b"abc123")],
    )
    produce(
        topics.bootstrap,
        topics.labels,
        [label(i) for i in range(100)] + [(b"p1", b'{"prediction_id": "p1"}')],
    )

    config = worker_config(topics, free_port(), contract={"max_message_bytes": 10_000})
    worker = workers(config).start()
    worker.wait_for(
        lambda: (
            worker.sample(PRED, topic=topics.predictions, model="fraud") == 300
            and worker.sample(PRED, topic=topics.labels, model="") == 100
            and sum(
                v
                for (n, _), v in worker.metrics().items()
                if n == "streamwatch_events_invalid_total"
            )
            == len(bad) + 1
        )
    )

    for reason, expected in Counter(r for _, r in bad).items():
        got = worker.sample(
            "streamwatch_events_invalid_total", topic=topics.predictions, reason=reason
        )
        assert got == expected, reason
    assert (
        worker.sample(
            "streamwatch_events_invalid_total", topic=topics.labels, reason="missing_field"
        )
        == 1
    )
    assert worker.get("/healthz")[0] == 200
    assert worker.get("/readyz") == (200, "consuming 4 partition(s)\n")

    # Every rejected message is in the dead-letter topic, bytes and headers intact.
    letters = consume_all(topics.bootstrap, topics.dead_letters, expected=len(bad) + 1)
    assert len(letters) == len(bad) + 1
    found = {}
    for m in letters:
        headers = _text_headers(m.headers())
        assert headers["streamwatch.source.topic"] in (topics.predictions, topics.labels)
        assert int(headers["streamwatch.source.offset"]) >= 0
        assert int(headers["streamwatch.source.partition"]) in (0, 1)
        assert headers["streamwatch.error.detail"]
        found[m.value()] = headers["streamwatch.error.reason"]
        if headers["streamwatch.source.topic"] == topics.predictions:
            assert headers["trace-id"] == "abc123"
    for value, reason in bad:
        assert found[value] == reason

    # docs/metrics.md is the one list of what /metrics exposes.
    documented = set(
        re.findall(
            r"^\| `(streamwatch_[a-z_]+)`",
            (ROOT / "docs/metrics.md").read_text(),
            flags=re.MULTILINE,
        )
    )
    _, text = worker.get("/metrics")
    exposed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    exposed = {n for n in exposed if n.startswith("streamwatch_")}
    assert exposed == documented

    assert worker.stop() == 0


def test_sigterm_mid_run_then_restart_counts_every_event_once(
    topics: Topics, workers: Workers
) -> None:
    topics.create(partitions=3)
    total = produce(topics.bootstrap, topics.predictions, stream(0, 60_000, seed=2))
    config = worker_config(
        topics, free_port(), worker={"batch_size": 200, "commit_interval_seconds": 0.2}
    )
    first = workers(config).start()
    first.wait_for(
        lambda: first.sample(PRED, topic=topics.predictions, model="fraud") > 0, timeout=60
    )
    assert first.stop(timeout=20) == 0  # "within seconds": a liveness bound
    done_first = _stopped_after(first.output())
    assert 0 < done_first < total, "the stop should land mid-run"

    second = workers(config).start()
    remaining = total - done_first
    second.wait_for(
        lambda: second.sample(PRED, topic=topics.predictions, model="fraud") >= remaining,
        timeout=90,
    )
    # nothing beyond the remainder arrives later either
    assert second.stop() == 0
    assert _stopped_after(second.output()) == remaining


def test_a_restart_on_partitions_read_to_their_end_applies_the_labels_that_come_later(
    topics: Topics, workers: Workers
) -> None:
    """Late labels after a restart: the predictions partitions were read to their end
    before it, so the new consumer has no position on them until something new comes. They
    must count as caught up (no lag, idle), not as a whole partition behind, which held
    every label back for good."""
    topics.create(partitions=2)
    produce(topics.bootstrap, topics.predictions, stream(0, 400, seed=3))
    # held labels whose predictions do not come go on after 2 s (not 10 min)
    config = worker_config(
        topics,
        free_port(),
        event_time={"idle_seconds": 1},
        labels={"early_hold_idle_seconds": 2},
    )
    first = workers(config).start()
    first.wait_for(lambda: first.sample(PRED, topic=topics.predictions, model="fraud") == 400)
    assert first.stop() == 0

    produce(topics.bootstrap, topics.labels, [label(i) for i in range(100)])
    second = workers(config).start()
    # the predictions they belong to were in the first worker's memory: unmatched here
    second.wait_for(lambda: second.sample("streamwatch_labels_unmatched_total") == 100, 60)
    assert second.sample("streamwatch_events_waiting", topic=topics.labels) == 0

    def caught_up() -> bool:  # both predictions partitions: exported, and no lag
        lags = {
            dict(labels)["partition"]: value
            for (name, labels), value in second.metrics().items()
            if name == "streamwatch_consumer_lag" and dict(labels)["topic"] == topics.predictions
        }
        return lags == {"0": 0.0, "1": 0.0}

    second.wait_for(caught_up, timeout=30)


def test_repartition_carries_the_largest_messages_the_contract_admits(
    topics: Topics, workers: Workers
) -> None:
    """A valid prediction just under contract.max_message_bytes (an unknown field pads it),
    and a 900 KB label that comes before it and is held in stage 1's changelog (base64 in
    JSON): both are forwarded and joined. librdkafka refuses a message over its 1 MB
    message.max.bytes by raising, which stopped the worker."""
    topics.create(partitions=1)
    big = {**prediction(50), "pad": "x" * 1_040_000}
    early = {"prediction_id": "p50", "label": True, "timestamp": T0_MS + 110_000}
    produce(
        topics.bootstrap, topics.labels, [(b"p50", orjson.dumps({**early, "pad": "y" * 900_000}))]
    )
    produce(
        topics.bootstrap,
        topics.predictions,
        [*stream(0, 50, seed=4), (b"p50", orjson.dumps(big))],
        message_max_bytes=2_000_000,
    )
    config = worker_config(
        topics, free_port(), engine={"mode": "repartition"}, event_time={"idle_seconds": 1}
    )
    w = workers(config).start()
    version = {"model": "fraud", "model_version": "v1"}
    w.wait_for(lambda: w.sample("streamwatch_predictions_total", **version) == 51, 90)
    w.wait_for(
        lambda: w.sample("streamwatch_labelled_events_total", **version, slice="__all__") == 1, 60
    )
    assert (
        w.sample("streamwatch_events_invalid_total", topic=topics.predictions, reason="too_large")
        == 0
    )


def _text_headers(headers: object) -> dict[str, str]:
    assert isinstance(headers, list)
    return {k: v.decode() for k, v in headers}


def _stopped_after(log: str) -> int:
    match = re.search(r"stopped after (\d+) messages", log)
    assert match, log
    return int(match.group(1))


def test_drift_alarm_on_the_shifted_feature_only_and_only_after_the_shift(
    topics: Topics, workers: Workers
) -> None:
    topics.create(partitions=1)
    produce(topics.bootstrap, topics.predictions, stream(0, 3000, seed=3))
    worker = workers(worker_config(topics, free_port())).start()

    def counters() -> dict[tuple[str, str, str], float]:
        return {
            (dict(labels)["signal"], dict(labels)["feature"], dict(labels)["detector"]): v
            for (name, labels), v in worker.metrics().items()
            if name == "streamwatch_drift_alarms_total"
        }

    def alarms() -> dict[tuple[str, str, str], float]:
        return {k: v for k, v in counters().items() if v > 0}

    worker.wait_for(lambda: worker.sample(PRED, topic=topics.predictions, model="fraud") == 3000)
    assert alarms() == {}
    # every counter exists at 0 once the reference does, so increase() sees the first alarm
    assert counters()[("feature", "amount", "cusum_mean")] == 0
    assert (
        worker.sample(
            "streamwatch_drift_score",
            model="fraud",
            model_version="v1",
            slice="__all__",
            signal="feature",
            feature="amount",
            statistic="psi",
            window="events_500",
        )
        < 0.2
    )

    produce(topics.bootstrap, topics.predictions, stream(3000, 1000, seed=4, amount_shift=1.0))
    worker.wait_for(lambda: worker.sample(PRED, topic=topics.predictions, model="fraud") == 4000)
    raised = alarms()
    assert raised.get(("feature", "amount", "cusum_mean"), 0) >= 1
    assert {feature for _, feature, _ in raised} == {"amount"}
    assert (
        worker.sample(
            "streamwatch_drift_last_alarm_timestamp_seconds",
            model="fraud",
            model_version="v1",
            slice="__all__",
            signal="feature",
            feature="amount",
            detector="cusum_mean",
        )
        >= (T0_MS + 3000 * 1000) / 1000
    )
    assert worker.stop() == 0


def test_refuses_topics_that_are_not_co_partitioned(topics: Topics, workers: Workers) -> None:
    topics.create(partitions=2, labels_partitions=3)
    worker = workers(worker_config(topics, free_port())).start()
    assert worker.process is not None
    assert worker.process.wait(timeout=30) == 2
    assert "same partition count" in worker.output()


def test_refuses_missing_topics(topics: Topics, workers: Workers) -> None:
    worker = workers(worker_config(topics, free_port())).start()  # topics never created
    assert worker.process is not None
    assert worker.process.wait(timeout=30) == 2
    assert f"topic {topics.predictions!r} does not exist" in worker.output()
