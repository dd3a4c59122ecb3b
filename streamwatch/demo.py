"""The demo: the pipeline on a built-in simulated production stream.

Without a broker it reads the stream through the one loop (:mod:`streamwatch.loop`), as
partition 0 of each topic. With ``bootstrap_servers`` it produces the stream into Kafka and
consumes it back through the real worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streamwatch.app import App
from streamwatch.config import Settings
from streamwatch.loop import Loop
from streamwatch.progress import Progress
from streamwatch.recorded import RecordedSource
from streamwatch.records import Record
from streamwatch.simulation import START_SECONDS, Scenario


@dataclass(frozen=True)
class DemoResult:
    messages: int
    events: dict[str, float]
    invalid: dict[str, float]
    alarms: list[tuple[str, str, str, str, str, int]]  # m, v, signal, feature, detector, index
    quality: list[str]  # lines about labels and quality


def _numbered(records: Iterable[Record]) -> Iterator[Record]:
    """Each record with the offset Kafka would give it (partition 0 of its topic)."""
    offsets: dict[str, int] = {}
    for r in records:
        offset = offsets.get(r.topic(), 0)
        offsets[r.topic()] = offset + 1
        yield Record(r.topic(), r.value(), r.key(), 0, offset)


def _total(scenario: Scenario) -> int:
    invalid = scenario.events // scenario.invalid_every if scenario.invalid_every else 0
    return 2 * scenario.events + invalid


def run_in_memory(app: App, scenario: Scenario) -> DemoResult:
    """The scenario through the one loop, as partition 0 of each topic."""
    topics = (app.settings.topics.predictions, app.settings.topics.labels)
    stream = _numbered(scenario.records())
    source = RecordedSource(topics, [(stream, [(topics[0], 0), (topics[1], 0)])])
    loop = Loop(source, app.pipeline, None, app.settings.event_time.align_seconds)
    progress = Progress(_total(scenario), "demo")
    loop.run_to_end(
        app.settings.worker.batch_size, lambda _: progress.update(app.pipeline.processed)
    )
    progress.close()
    return _result(app)


def _create_topics(bootstrap_servers: str, names: Iterable[str], partitions: int = 2) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in names]
    )
    for _topic, future in futures.items():
        try:
            future.result()
        except Exception as error:  # an existing topic is fine; anything else is not
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise


def _producer(bootstrap_servers: str) -> Producer:
    # murmur2_random: the Java client's partitioner, so both topics hash ids alike.
    return Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "linger.ms": 50,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
        }
    )


def _send(producer: Producer, r: Record) -> None:
    while True:
        try:
            producer.produce(r.topic(), r.value(), r.key())
            return
        except BufferError:
            producer.poll(0.1)


def produce_live(
    settings: Settings,
    bootstrap_servers: str,
    rate: float,
    round_events: int,
    stop: threading.Event,
) -> int:
    """Produce the demo stream at ``rate`` predictions per second of wall clock, with event
    times of now, round after round (each round drifts half way, from a new seed), until
    ``stop``. The compose stack's demo producer. Returns the predictions produced."""
    topics = settings.topics
    _create_topics(bootstrap_servers, (topics.predictions, topics.labels, topics.dead_letters))
    producer = _producer(bootstrap_servers)
    log = logging.getLogger("streamwatch.demo")
    produced, started, seed = 0, time.monotonic(), 0
    while not stop.is_set():
        scenario = Scenario(
            events=round_events,
            drift_at=round_events // 2,
            seed=seed,
            predictions_topic=topics.predictions,
            labels_topic=topics.labels,
            start=time.time(),
            spacing_seconds=1.0 / rate,
        )
        log.info("round %d: %d predictions at %g/s, drifting half way", seed, round_events, rate)
        for r in scenario.records():
            _send(producer, r)
            if r.topic() != topics.predictions:
                continue
            produced += 1
            ahead = started + produced / rate - time.monotonic()
            if ahead > 0:
                producer.poll(0)
                if stop.wait(ahead):
                    break
        seed += 1
    producer.flush(10)
    return produced


def run_on_kafka(app: App, scenario: Scenario, bootstrap_servers: str) -> DemoResult:
    """Produce the scenario to Kafka, then consume it back with the real worker."""
    topics = app.settings.topics
    _create_topics(bootstrap_servers, (topics.predictions, topics.labels, topics.dead_letters))
    producer = _producer(bootstrap_servers)
    total = _total(scenario)
    progress = Progress(total, "producing")
    for i, r in enumerate(scenario.records(), 1):
        _send(producer, r)
        if i % 5000 == 0:
            producer.poll(0)
            progress.update(i)
    producer.flush(60)
    progress.update(total)
    progress.close()

    stop = threading.Event()
    worker = app.worker()
    worker.drain_on_stop = True
    consuming = Progress(total, "consuming")

    def watch() -> None:
        while not stop.is_set():
            consuming.update(app.pipeline.processed)
            if app.pipeline.processed >= total:
                stop.set()
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    worker.run(stop)
    watcher.join()
    consuming.close()
    return _result(app)


def _result(app: App) -> DemoResult:
    telemetry = app.pipeline.telemetry
    events = {
        s.labels["topic"]: s.value
        for m in telemetry.events.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }
    invalid = {
        s.labels["reason"]: s.value
        for m in telemetry.invalid.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.value
    }
    alarms = [
        (
            a.model,
            a.model_version,
            a.signal,
            a.feature,
            a.detector,
            int(a.event_time - START_SECONDS),
        )
        for a in app.pipeline.monitor.alarm_log
    ]
    return DemoResult(app.pipeline.processed, events, invalid, alarms, _quality(app))


def _quality(app: App) -> list[str]:
    snap = app.pipeline.quality.snapshot()
    joined = sum(snap.joined.values())
    lines = [
        f"labels: {joined:,} joined to their predictions, {snap.unmatched_labels:,} "
        f"unmatched, {sum(snap.pending.values()):,} predictions still waiting"
    ]
    realized = {(s, sl): v for (_, _, sl, s, w, v) in snap.scores if w == "1d"}
    estimated = {(s, sl): v for (_, _, sl, s, w, v) in snap.estimated if w == "1d"}
    for key in (("accuracy", "__all__"), ("roc_auc", "__all__")):
        if key in realized and key in estimated:
            lines.append(
                f"  {key[0]} over the last day: {realized[key]:.3f} "
                f"(estimated before the labels: {estimated[key]:.3f})"
            )
    return lines


def summary(result: DemoResult, scenario: Scenario) -> str:
    lines = [f"streamwatch demo: {result.messages:,} messages processed"]
    for topic, n in sorted(result.events.items()):
        lines.append(f"  {topic}: {n:,.0f} valid events")
    bad = sum(result.invalid.values())
    reasons = ", ".join(f"{k}={v:.0f}" for k, v in sorted(result.invalid.items()))
    lines.append(f"  rejected: {bad:,.0f} ({reasons or 'none'})")
    lines.append(
        f"drift injected at event {scenario.drift_at:,} "
        f"(feature 'amount': log-mean +{scenario.shift})"
    )
    lines += result.quality
    if not result.alarms:
        lines.append("no drift alarm raised")
    first: dict[tuple[str, ...], tuple[int, int]] = {}
    for *what, index in result.alarms:  # the first alarm of each detector, and how many
        seen = first.get(tuple(what))
        first[tuple(what)] = (seen[0], seen[1] + 1) if seen else (index, 1)
    for (model, version, signal, feature, detector), (index, count) in first.items():
        when = "after" if index >= scenario.drift_at else "BEFORE"
        more = f", {count - 1} more later" if count > 1 else ""
        lines.append(
            f"  ALARM {model} {version} {signal}={feature} detector={detector} at "
            f"event {index:,} ({abs(index - scenario.drift_at):,} events {when} the "
            f"drift{more})"
        )
    return "\n".join(lines)
