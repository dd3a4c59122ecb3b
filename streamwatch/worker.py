"""Worker: the consume → decode → monitor → store loop, with checkpoints and rebalances.

One iteration::

    consume a batch (short timeout, so a stop request is seen within a second)
    decode every message; rejections → dead-letter producer + invalid counter
    apply the valid predictions to the monitor (vectorised per model version and partition)
    store the batch's offsets

A checkpoint, every ``worker.commit_interval_seconds``, on revoke and at shutdown, runs in
this order, and a later step never runs if an earlier one failed:

    1. (state changelog: comes with the durability issue)
    2. flush the dead-letter producer (every rejected message is acknowledged)
    3. commit the stored offsets synchronously
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaException, TopicPartition

from streamwatch.config import Settings
from streamwatch.deadletter import DeadLetters
from streamwatch.decode import Decoder, Label, Prediction, RawMessage, Rejection
from streamwatch.errors import ConfigError, ConfigProblem, KafkaSetupError
from streamwatch.exporter import Health, Telemetry
from streamwatch.monitor import Alarm, AlarmKey, Monitor
from streamwatch.quality import Quality
from streamwatch.source import Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What one batch produced besides its counts."""

    rejected: list[Rejection]
    alarms: list[Alarm]


class Pipeline:
    """The stages after the source, shared by the Kafka worker and the in-memory demo."""

    def __init__(
        self, settings: Settings, monitor: Monitor, quality: Quality, telemetry: Telemetry
    ) -> None:
        self.topics = settings.topics
        self.decoder = Decoder(settings)
        self.monitor = monitor
        self.quality = quality
        self.telemetry = telemetry
        self.processed = 0
        self._announced: set[AlarmKey] = set()

    def process(self, messages: Sequence[RawMessage], dead_letters: DeadLetters | None) -> Outcome:
        """Decode and apply one batch; rejections are sent (given a producer) and counted."""
        predictions: list[Prediction] = []
        labels: list[Label] = []
        rejected: list[Rejection] = []
        predictions_topic = self.topics.predictions
        for m in messages:
            topic = m.topic() or ""
            headers = m.headers()
            if isinstance(headers, dict):
                headers = list(headers.items())
            args = (m.value(), m.key(), headers, topic, m.partition() or 0, m.offset() or 0)
            record = (
                self.decoder.prediction(*args)
                if topic == predictions_topic
                else self.decoder.label(*args)
            )
            if isinstance(record, Prediction):
                predictions.append(record)
            elif isinstance(record, Label):
                labels.append(record)
            else:
                rejected.append(record)
        for r in rejected:
            if dead_letters is not None:
                dead_letters.send(r)
            self.telemetry.invalid.labels(r.topic, r.reason).inc()
        alarms = self.monitor.apply(predictions, rejected)
        for alarm in alarms:
            # A drift that persists keeps firing (detectors restart after each alarm): the
            # first of each detector is a warning, the rest are in the counters.
            level = logging.DEBUG if alarm.key in self._announced else logging.WARNING
            self._announced.add(alarm.key)
            log.log(
                level,
                "drift alarm: model=%s version=%s slice=%s %s=%s detector=%s at offset %d",
                alarm.model,
                alarm.model_version,
                alarm.slice,
                alarm.signal,
                alarm.feature,
                alarm.detector,
                alarm.offset,
            )
        for concept in self.quality.apply(predictions, labels):
            log.info(
                "concept drift alarm: model=%s version=%s slice=%s detector=%s",
                concept.model,
                concept.model_version,
                concept.slice,
                concept.detector,
            )
        for model, delay in self.quality.take_label_delays():
            self.telemetry.label_delay.labels(model).observe(delay)
        self._count(predictions_topic, predictions, labels)
        self.processed += len(messages)
        return Outcome(rejected, alarms)

    def _count(
        self, predictions_topic: str, predictions: list[Prediction], labels: list[Label]
    ) -> None:
        t = self.telemetry
        for model, n in Counter(p.model for p in predictions).items():
            t.events.labels(predictions_topic, model).inc(n)
        newest: dict[str, float] = {}
        for p in predictions:
            if p.timestamp > newest.get(p.model, float("-inf")):
                newest[p.model] = p.timestamp
        for model, ts in newest.items():
            t.last_event.labels(predictions_topic, model).set(ts)
        if labels:
            # Labels carry no model until they are joined to their prediction.
            t.events.labels(self.topics.labels, "").inc(len(labels))
            t.last_event.labels(self.topics.labels, "").set(max(x.timestamp for x in labels))


class Worker:
    """A consumer-group member: runs the pipeline on Kafka until asked to stop."""

    def __init__(self, settings: Settings, pipeline: Pipeline, health: Health) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.health = health
        self.telemetry = pipeline.telemetry
        try:
            self.dead_letters = DeadLetters(
                settings.topics.dead_letters, settings.kafka.librdkafka()
            )
            self.source = Source(settings, self._assigned, self._revoked, self._lost)
        except KafkaException as error:  # librdkafka refused a property
            raise ConfigError(
                "kafka.properties",
                [
                    ConfigProblem(
                        "kafka.properties",
                        str(error.args[0].str()),
                        "use a property librdkafka knows (see librdkafka's CONFIGURATION.md)",
                    )
                ],
            ) from None
        self._lag_series: set[tuple[str, str]] = set()

    def check(self) -> None:
        """Refuse to start on missing topics or topics that are not co-partitioned."""
        counts = self.source.check_topics()
        predictions, labels = self.source.topics
        if counts[predictions] != counts[labels]:
            raise KafkaSetupError(
                f"topics {predictions!r} ({counts[predictions]} partitions) and {labels!r} "
                f"({counts[labels]} partitions) must have the same partition count, so that "
                f"a prediction and its label land on the same worker: repartition one of them"
            )

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then finish the batch, checkpoint and close."""
        w = self.settings.worker
        try:
            self.check()
            self.source.subscribe()
            last_commit = time.monotonic()
            while not stop.is_set():
                messages = self.source.consume(w.batch_size, w.poll_timeout_seconds)
                self.health.last_poll = time.monotonic()
                if messages:
                    with self.telemetry.batch_duration.time():
                        self.pipeline.process(messages, self.dead_letters)
                    self.source.store(messages)
                if time.monotonic() - last_commit >= w.commit_interval_seconds:
                    self.checkpoint()
                    self._export_lag()
                    last_commit = time.monotonic()
            self.checkpoint()
            log.info("stopped after %d messages; offsets committed", self.pipeline.processed)
        finally:
            self.source.close()  # triggers the final revoke, which checkpoints again
            self.health.assigned = 0

    def checkpoint(self) -> None:
        """Dead letters acknowledged first, input offsets committed second."""
        self.dead_letters.flush()
        self.source.commit()

    def _export_lag(self) -> None:
        for (topic, partition), lag in self.source.lag().items():
            self._lag_series.add((topic, str(partition)))
            self.telemetry.lag.labels(topic, str(partition)).set(lag)

    # -- rebalance callbacks (run inside consume) ---------------------------------------
    def _assigned(self, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", [(tp.topic, tp.partition) for tp in partitions])
        owned = [tp.partition for tp in partitions if tp.topic == self.settings.topics.predictions]
        self.pipeline.monitor.assign(owned)
        self.pipeline.quality.assign(owned)
        self._set_assigned(partitions)

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", [(tp.topic, tp.partition) for tp in partitions])
        self.checkpoint()  # the batch before this callback is applied and stored
        self._drop(partitions)

    def _lost(self, partitions: list[TopicPartition]) -> None:
        log.warning("lost %s (not committing)", [(tp.topic, tp.partition) for tp in partitions])
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        owned = [tp.partition for tp in partitions if tp.topic == self.settings.topics.predictions]
        self.pipeline.monitor.revoke(owned)
        self.pipeline.quality.revoke(owned)
        for tp in partitions:  # retire the lag series of partitions we no longer own
            key = (tp.topic, str(tp.partition))
            if key in self._lag_series:
                self._lag_series.discard(key)
                self.telemetry.lag.remove(*key)
        self._set_assigned([])

    def _set_assigned(self, partitions: list[TopicPartition]) -> None:
        counts = Counter(tp.topic for tp in partitions)
        for topic in self.source.topics:
            self.telemetry.assigned.labels(topic).set(counts.get(topic, 0))
        self.health.assigned = len(partitions)
