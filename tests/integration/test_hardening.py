"""Adversarial input on the real broker: every case once crashed, stalled or blinded a worker."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import free_port
from tests.events import T0_MS, label, prediction, stream
from tests.integration.conftest import Topics, WorkerProcess, consume_all, produce, worker_config

Workers = Callable[[dict[str, Any]], WorkerProcess]
PRED = "streamwatch_events_total"
INVALID = "streamwatch_events_invalid_total"


def _headers(message: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers() or []}


def _peak_rss_mib(worker: WorkerProcess) -> float:
    assert worker.process is not None
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def test_oversized_dead_letters_go_out_without_payload_and_never_crash_loop(
    topics: Topics, workers: Workers
) -> None:
    # Input topics accept 3 MB; the dead-letter topic only 100 kB.
    topics.create(
        partitions=1,
        config={"max.message.bytes": "3000000"},
        dead_letter_config={"max.message.bytes": "100000"},
    )
    big = b'{"pad": "' + b"x" * 1_500_000 + b'"}'  # past the producer's 1 MB as well
    medium = b'{"pad": "' + b"y" * 200_000 + b'"}'  # within the contract, past the topic's limit
    produce(topics.bootstrap, topics.predictions, stream(0, 100, seed=1))
    produce(
        topics.bootstrap,
        topics.predictions,
        [(b"k1", big), (b"k2", medium)],
        message_max_bytes=3_000_000,
    )
    produce(topics.bootstrap, topics.predictions, stream(100, 100, seed=1))
    config = worker_config(topics, free_port(), contract={"max_message_bytes": 1_048_576})
    worker = workers(config).start()
    worker.wait_for(
        lambda: (
            worker.sample(PRED, topic=topics.predictions, model="fraud") == 200
            and worker.sample(INVALID, topic=topics.predictions, reason="too_large") == 1
            and worker.sample(INVALID, topic=topics.predictions, reason="missing_field") == 1
            and worker.sample("streamwatch_dead_letters_pending") == 0
        )
    )
    assert worker.sample("streamwatch_dead_letters_payload_omitted_total") == 2
    assert worker.stop() == 0

    letters = consume_all(topics.bootstrap, topics.dead_letters, expected=2)
    assert len(letters) == 2
    expected = (("too_large", big), ("missing_field", medium))
    for letter, (reason, original) in zip(letters, expected, strict=True):
        headers = _headers(letter)
        assert letter.value() is None
        assert headers["streamwatch.error.reason"] == reason
        assert headers["streamwatch.error.payload_omitted"] == "true"
        assert headers["streamwatch.error.payload_sha256"] == hashlib.sha256(original).hexdigest()
        assert int(headers["streamwatch.error.payload_bytes"]) == len(original) + 2  # + key

    # The offsets were committed past both: a restart reads nothing again, and runs.
    again = workers(config).start()
    again.wait_for(lambda: again.get("/readyz")[0] == 200)
    produce(topics.bootstrap, topics.predictions, stream(200, 10, seed=1))
    again.wait_for(lambda: again.sample(PRED, topic=topics.predictions, model="fraud") == 10)
    assert again.sample(INVALID, topic=topics.predictions, reason="too_large") == 0
    assert again.stop() == 0


def test_long_strings_are_rejected_and_cost_no_memory(topics: Topics, workers: Workers) -> None:
    topics.create(partitions=1, config={"max.message.bytes": "3000000"})
    ok = prediction(10_000)
    long_category = {**ok, "features": {**ok["features"], "country": "c" * 900_000}}
    long_id = {**ok, "prediction_id": "p" * 100_000}
    long_attribute = {**ok, "attributes": {"country": "a" * 100_000}}
    many_features = {**ok, "features": {f"f{i}": 1 for i in range(1000)}}
    bad = [long_category, long_id, long_attribute, many_features]
    produce(topics.bootstrap, topics.predictions, stream(0, 2000, seed=2))
    produce(
        topics.bootstrap,
        topics.predictions,
        [(b"k", orjson.dumps(doc)) for doc in bad],
        message_max_bytes=3_000_000,
    )
    config = worker_config(topics, free_port(), contract={"max_message_bytes": 2_000_000})
    worker = workers(config).start()
    worker.wait_for(
        lambda: (
            worker.sample(PRED, topic=topics.predictions, model="fraud") == 2000
            and worker.sample(INVALID, topic=topics.predictions, reason="too_long") == 3
            and worker.sample(INVALID, topic=topics.predictions, reason="too_many_fields") == 1
        )
    )
    # Once a 900,000-character category took 9.65 GiB; the worker's whole peak is now far
    # under a tenth of that.
    assert _peak_rss_mib(worker) < 900
    assert worker.stop() == 0


def test_a_far_future_event_is_rejected_and_poisons_nothing(
    topics: Topics, workers: Workers
) -> None:
    topics.create(partitions=1)
    # Two versions interleaved; then one event from the year 9999 for v1; then more of both.
    # The labels of the first events are held until their predictions come.
    early = [label(i) for i in range(20)]
    produce(topics.bootstrap, topics.labels, early)
    events = [
        (f"p{i}".encode(), orjson.dumps(prediction(i, version=f"v{1 + i % 2}")))
        for i in range(20, 1200)
    ]
    future = {**prediction(5_000_000), "timestamp": 253_402_300_799_000}  # 9999-12-31
    produce(topics.bootstrap, topics.predictions, events[:600])
    produce(topics.bootstrap, topics.predictions, [(b"f", orjson.dumps(future))])
    produce(topics.bootstrap, topics.predictions, events[600:])
    produce(
        topics.bootstrap,
        topics.predictions,
        [(f"p{i}".encode(), orjson.dumps(prediction(i))) for i in range(20)],
    )
    config = worker_config(topics, free_port(), exporter={"retire_after_seconds": 3600})
    worker = workers(config).start()
    worker.wait_for(
        lambda: (
            worker.sample(PRED, topic=topics.predictions, model="fraud") == 1200
            and worker.sample(INVALID, topic=topics.predictions, reason="future_timestamp") == 1
        )
    )
    metrics = worker.metrics()
    versions = {
        dict(labels).get("model_version")
        for (name, labels), _ in metrics.items()
        if name == "streamwatch_window_events"
    }
    assert versions == {"v1", "v2"}  # neither version was retired
    # the 1h drift window still holds the recent events of each version
    one_hour = worker.sample(
        "streamwatch_window_events", model="fraud", model_version="v2", slice="__all__", window="1h"
    )
    assert one_hour > 0
    # the early labels found their predictions (none released as unmatched)
    worker.wait_for(
        lambda: (
            worker.sample("streamwatch_labels_joined_total", model="fraud", model_version="v1")
            == 20
        )
    )
    assert worker.sample("streamwatch_labels_unmatched_total") == 0
    assert worker.stop() == 0


def test_late_events_are_rejected_against_the_partition_watermark(
    topics: Topics, workers: Workers
) -> None:
    topics.create(partitions=1)
    produce(topics.bootstrap, topics.predictions, stream(0, 100, seed=3))
    stale = {**prediction(100), "timestamp": T0_MS - 8 * 86_400_000}  # 8 days before
    produce(topics.bootstrap, topics.predictions, [(b"s", orjson.dumps(stale))])
    worker = workers(worker_config(topics, free_port())).start()
    worker.wait_for(
        lambda: (
            worker.sample(INVALID, topic=topics.predictions, reason="late_timestamp") == 1
            and worker.sample(PRED, topic=topics.predictions, model="fraud") == 100
        )
    )
    letters = consume_all(topics.bootstrap, topics.dead_letters, expected=1)
    assert _headers(letters[0])["streamwatch.error.reason"] == "late_timestamp"
    assert worker.stop() == 0


def test_model_versions_are_capped(topics: Topics, workers: Workers) -> None:
    topics.create(partitions=1)
    # the real version carries half the traffic; 10,000 one-off versions the other half
    events = []
    for i in range(20_000):
        version = "v1" if i % 2 == 0 else f"junk-{i}"
        events.append((f"p{i}".encode(), orjson.dumps(prediction(i, version=version))))
    produce(topics.bootstrap, topics.predictions, events)
    config = worker_config(topics, free_port())
    config["models"][0]["max_versions"] = 5
    worker = workers(config).start()
    worker.wait_for(lambda: worker.sample(PRED, topic=topics.predictions, model="fraud") == 20_000)
    metrics = worker.metrics()
    versions = {
        dict(labels)["model_version"]
        for (_, labels), _ in metrics.items()
        if "model_version" in dict(labels)
    }
    assert "v1" in versions
    assert len(versions) <= 5 + 1  # the tracked ones and __other__
    assert worker.sample("streamwatch_model_versions_tracked", model="fraud") <= 5
    overflow = worker.sample("streamwatch_model_versions_overflow_total", model="fraud")
    assert 10_000 - 5 <= overflow <= 10_000
    assert len(metrics) < 2000  # a scrape stays small whatever the versions
    assert worker.stop() == 0


def test_held_labels_are_visible_and_bounded(topics: Topics, workers: Workers) -> None:
    topics.create(partitions=2)
    produce(topics.bootstrap, topics.labels, [label(1_000_000 + i) for i in range(30_000)])
    config = worker_config(topics, free_port(), labels={"early_hold_max_labels": 5000})
    worker = workers(config).start()
    worker.wait_for(
        lambda: (
            worker.sample(PRED, topic=topics.labels, model="") == 30_000
            and worker.sample("streamwatch_labels_early_evicted_total") == 25_000
        )
    )
    assert worker.sample("streamwatch_labels_early_held") == 5000
    assert worker.sample("streamwatch_labels_unmatched_total") == 25_000
    assert worker.stop() == 0
