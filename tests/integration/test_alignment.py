"""A backlog on a real broker: the worker reads the two topics in step by event time.

20,000 predictions (100 per second of event time) and their labels (each 30 s after its
prediction) wait in the topics before the worker starts. Labels are small messages: read
freely, they run far ahead of their predictions. The event order keeps them until their
predictions have passed (streamwatch/ordering), so it fills up: past
``max_waiting_events`` (10,000 here) the oldest are forced out ahead of their predictions,
out of the one order, into the early-label hold (2,000; past it, lost to the join). Read in
step (5 s), about 100/s x 5 s plus a few batches of 500 wait, nothing is forced, and every
label joins.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.conftest import free_port
from tests.integration.conftest import Topics, WorkerProcess, produce, worker_config

N = 20_000


def _backlog(topics: Topics) -> None:
    start_ms = int((time.time() - 3600) * 1000)
    predictions, labels = [], []
    for i in range(N):
        pid = f"p{i}"
        at = start_ms + i * 10
        body = {
            "prediction_id": pid,
            "model": "fraud",
            "model_version": "v1",
            "timestamp": at,
            "features": {"amount": 100.0 + i % 7, "age": 40.0, "country": "DE"},
            "prediction": 0.9 if i % 3 else 0.1,
        }
        predictions.append((pid.encode(), orjson.dumps(body)))
        label = {"prediction_id": pid, "label": bool(i % 3), "timestamp": at + 30_000}
        labels.append((pid.encode(), orjson.dumps(label)))
    produce(topics.bootstrap, topics.predictions, predictions)
    produce(topics.bootstrap, topics.labels, labels)


@pytest.mark.parametrize("align", [None, 5], ids=["free", "in-step"])
def test_a_backlog_is_read_in_step(
    kafka_bootstrap: str, tmp_path: Path, align: float | None
) -> None:
    topics = Topics(kafka_bootstrap).create(partitions=2)
    _backlog(topics)
    config = worker_config(
        topics,
        free_port(),
        labels={"early_hold_max_labels": 2000},
        event_time={"align_seconds": align, "max_waiting_events": 10_000, "idle_seconds": 1},
        worker={"batch_size": 500},
    )
    worker = WorkerProcess(config, tmp_path).start()
    joined = {"model": "fraud", "model_version": "v1", "slice": "__all__"}

    def settled() -> bool:
        done = worker.sample("streamwatch_labelled_events_total", **joined)
        return done + worker.sample("streamwatch_labels_unmatched_total") >= N

    started = time.monotonic()
    try:
        worker.wait_for(settled, timeout=120)
        took = time.monotonic() - started
        evicted = worker.sample("streamwatch_labels_early_evicted_total")
        forced = worker.sample("streamwatch_events_forced_total", topic=topics.labels)
        labelled = worker.sample("streamwatch_labelled_events_total", **joined)
    finally:
        worker.stop()
    print(
        f"\nalign_seconds={align}: {labelled:,.0f} joined, {forced:,.0f} labels forced out of "
        f"order, {evicted:,.0f} evicted, {took:.1f} s"
    )
    if align is None:
        assert forced > 0  # the failure the alignment exists for
    else:
        assert forced == 0
        assert evicted == 0
        assert labelled == N


def test_a_partition_paused_at_a_rebalance_is_read_again(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """librdkafka keeps a partition's pause across a rebalance. A second worker joins while
    the first holds partitions back for alignment (found by bench/throughput: a partition
    paused at the revoke and assigned back was never read again). Every message is still
    counted exactly once over the two workers."""
    topics = Topics(kafka_bootstrap).create(partitions=4)
    _backlog(topics)

    def config() -> dict[str, object]:
        return worker_config(
            topics,
            free_port(),
            event_time={"align_seconds": 1, "idle_seconds": 1},
            worker={"batch_size": 200},
        )

    first = WorkerProcess(config(), tmp_path).start()
    second = WorkerProcess(config(), tmp_path)
    both = (first, second)

    def counted(worker: WorkerProcess) -> float:
        return worker.sample(
            "streamwatch_events_total", topic=topics.predictions, model="fraud"
        ) + worker.sample("streamwatch_events_total", topic=topics.labels, model="")

    try:
        first.wait_for(
            lambda: (
                first.sample("streamwatch_partitions_paused", topic=topics.labels) > 0
                and counted(first) > 2_000
            ),
            timeout=60,
        )
        second.start()
        first.wait_for(lambda: sum(counted(w) for w in both) >= 2 * N, timeout=120)
        time.sleep(1)  # nothing more comes
        totals = [counted(w) for w in both]
        assert sum(totals) == 2 * N, totals
        assert all(totals), totals  # both took part
    finally:
        for worker in both:
            worker.kill()
