"""Exporter: the Prometheus side. Read-only with respect to the pipeline.

* :class:`Telemetry` owns the worker's own counters, gauges and histogram (events, invalid
  events, lag, batch duration), registered in an injected registry.
* :class:`MonitorCollector` builds the drift families fresh at each scrape from
  :meth:`streamwatch.monitor.Monitor.snapshot`, so retired series simply stop appearing.
* :class:`Health` is what ``/readyz`` reports (:mod:`streamwatch.endpoint` serves it).
  Every metric is listed in docs/metrics.md.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import confluent_kafka
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamwatch import __version__
from streamwatch.admission import ADMISSION_REASONS
from streamwatch.decode import REASONS
from streamwatch.monitor import Monitor
from streamwatch.quality import Quality
from streamwatch.scores import Counts

# `_created` series double every counter's series count and nothing here alerts on them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Telemetry:
    """The worker's own instruments, in one registry."""

    def __init__(self, registry: CollectorRegistry, topics: tuple[str, ...]) -> None:
        build = Gauge(
            "streamwatch_build_info",
            "Build information; the value is always 1.",
            ["version", "python", "confluent_kafka", "librdkafka"],
            registry=registry,
        )
        build.labels(
            __version__,
            platform.python_version(),
            confluent_kafka.version()[0],
            confluent_kafka.libversion()[0],
        ).set(1)
        self.events = Counter(
            "streamwatch_events", "Valid events processed.", ["topic", "model"], registry=registry
        )
        self.invalid = Counter(
            "streamwatch_events_invalid",
            "Rejected messages, each sent to the dead-letter topic.",
            ["topic", "reason"],
            registry=registry,
        )
        for topic in topics:  # every series exists from the start, so increase() sees the first
            for reason in (*REASONS, *ADMISSION_REASONS):
                self.invalid.labels(topic, reason)
        self.last_event = Gauge(
            "streamwatch_last_event_timestamp_seconds",
            "Event time of the newest event seen (the staleness signal).",
            ["topic", "model"],
            registry=registry,
        )
        self.lag = Gauge(
            "streamwatch_consumer_lag",
            "Messages between the consumer's position and the partition's end.",
            ["topic", "partition"],
            registry=registry,
        )
        self.assigned = Gauge(
            "streamwatch_assigned_partitions",
            "Partitions currently assigned to this worker.",
            ["topic"],
            registry=registry,
        )
        self.paused = Gauge(
            "streamwatch_partitions_paused",
            "Assigned partitions paused because they ran ahead of their co-partition on the "
            "other topic in event time (event_time.align_seconds).",
            ["topic"],
            registry=registry,
        )
        self.waiting = Gauge(
            "streamwatch_events_waiting",
            "Admitted records waiting for the other partitions to pass their event time "
            "(event_time.reorder_seconds), so that the engine sees one order.",
            ["topic"],
            registry=registry,
        )
        self.out_of_order = Counter(
            "streamwatch_events_out_of_order",
            "Records older than records already applied (more out of order than "
            "event_time.reorder_seconds): applied with the next release, out of the one order.",
            ["topic"],
            registry=registry,
        )
        self.forced = Counter(
            "streamwatch_events_forced",
            "Records applied before every partition passed them, because more than "
            "event_time.max_waiting_events were waiting (a stalled partition).",
            ["topic"],
            registry=registry,
        )
        for topic in topics:
            self.assigned.labels(topic).set(0)
            self.paused.labels(topic).set(0)
            self.waiting.labels(topic).set(0)
            self.out_of_order.labels(topic)
            self.forced.labels(topic)
        self.label_delay = Histogram(
            "streamwatch_label_delay_seconds",
            "Label event time minus prediction event time, per joined pair.",
            ["model"],
            buckets=(
                60,
                300,
                900,
                3600,
                3 * 3600,
                6 * 3600,
                12 * 3600,
                86400,
                2 * 86400,
                3 * 86400,
                7 * 86400,
            ),
            registry=registry,
        )
        self.version_overflow = Counter(
            "streamwatch_model_versions_overflow",
            "Predictions of a model version past models[].max_versions, counted under the "
            "version __other__.",
            ["model"],
            registry=registry,
        )
        self.versions_tracked = Gauge(
            "streamwatch_model_versions_tracked",
            "Model versions tracked (bounded by models[].max_versions).",
            ["model"],
            registry=registry,
        )
        self.dead_letters_pending = Gauge(
            "streamwatch_dead_letters_pending",
            "Dead letters not yet acknowledged by the dead-letter topic.",
            registry=registry,
        )
        self.dead_letters_omitted = Counter(
            "streamwatch_dead_letters_payload_omitted",
            "Dead letters sent without their payload because it would not fit the topic.",
            registry=registry,
        )
        self.checkpoint_failures = Counter(
            "streamwatch_checkpoint_failures",
            "Checkpoints that could not commit, by the step that failed.",
            ["step"],
            registry=registry,
        )
        self.batch_duration = Histogram(
            "streamwatch_batch_duration_seconds",
            "Time to process one consumed micro-batch.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )


def _family(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    doc: str,
    labels: list[str],
    rows: Iterable[tuple[Any, ...]],
) -> Metric:
    family = kind(name, doc, labels=labels)
    for *label_values, value in rows:
        family.add_metric([str(v) for v in label_values], float(value))
    return family


VERSION = ["model", "model_version"]
SEGMENT = [*VERSION, "slice"]  # a model version, or one value of a slice with drift
SIGNAL = [*SEGMENT, "signal", "feature"]


class MonitorCollector(Collector):
    """The detection engine's state, built fresh at each scrape from a snapshot: a series
    whose model version, window or score went away simply stops appearing."""

    def __init__(self, monitor: Monitor, hidden: Callable[[], bool] = lambda: False) -> None:
        self.monitor = monitor
        self.hidden = hidden  # while the engine rebuilds (repartition): no version series

    def collect(self) -> Iterator[Metric]:
        if self.hidden():
            return
        snap = self.monitor.snapshot()
        g, c = GaugeMetricFamily, CounterMetricFamily
        yield _family(
            g,
            "streamwatch_model_info",
            "A model version seen in the stream and the reference it is judged "
            "against; the value is always 1.",
            [*VERSION, "reference", "run_id", "data_snapshot", "code_revision", "environment"],
            ((*row, 1) for row in snap.model_info),
        )
        yield _family(
            c,
            "streamwatch_predictions",
            "Predictions of a tracked model version, warm-up included (what `streamwatch "
            "gate` counts as evidence).",
            VERSION,
            snap.predictions,
        )
        yield _family(
            g,
            "streamwatch_reference_score",
            "A score recorded in a model version's reference profile (its training or "
            "validation metrics, `streamwatch baseline --metric`).",
            [*VERSION, "score"],
            snap.reference_scores,
        )
        yield _family(
            g,
            "streamwatch_reference_warmup_ratio",
            "Fill of a model version's (or slice value's) warm-up reference; 1 once it "
            "has a reference.",
            SEGMENT,
            snap.warmup,
        )
        yield _family(
            g,
            "streamwatch_drift_score",
            "A windowed drift statistic of a signal against its reference; absent "
            "while undefined (see streamwatch_drift_score_undefined).",
            [*SIGNAL, "statistic", "window"],
            snap.scores,
        )
        yield _family(
            g,
            "streamwatch_drift_score_undefined",
            "1 where a signal's scores are absent, with the reason: warming_up, "
            "too_few_events or no_values.",
            [*SIGNAL, "window", "reason"],
            ((*row, 1) for row in snap.undefined),
        )
        yield _family(
            g,
            "streamwatch_window_events",
            "Events in a window (owned partitions).",
            [*SEGMENT, "window"],
            ((m, v, s, w, n) for m, v, s, w, n, _ in snap.windows),
        )
        yield _family(
            g,
            "streamwatch_window_fill_ratio",
            "How full a window is: events over its size, or covered event time over its span.",
            [*SEGMENT, "window"],
            ((m, v, s, w, f) for m, v, s, w, _, f in snap.windows),
        )
        yield _family(
            g,
            "streamwatch_data_quality_ratio",
            "Share of a feature's events in the count window failing a check: "
            "missing, out_of_range, unseen_category or type_error.",
            [*SEGMENT, "feature", "check"],
            snap.quality,
        )
        yield _family(
            g,
            "streamwatch_drift_detector_ratio",
            "A sequential detector's statistic over its threshold (1 = alarm), "
            "the highest of its charts and of the owned partitions.",
            [*SIGNAL, "detector"],
            snap.detector_ratio,
        )
        yield _family(
            g,
            "streamwatch_drift_threshold",
            "Threshold in force for a detector, derived from the false-alarm "
            "budget (CUSUM h, or the chi-square test's significance level).",
            [*SEGMENT, "detector"],
            snap.thresholds,
        )
        yield _family(
            c,
            "streamwatch_drift_alarms",
            "Drift alarms raised. Alert on increase(): a detector's flag is true "
            "for one event only.",
            [*SIGNAL, "detector"],
            ((*k, n) for k, n in snap.alarms.items()),
        )
        yield _family(
            g,
            "streamwatch_drift_last_alarm_timestamp_seconds",
            "Event time of the event that raised the latest alarm.",
            [*SIGNAL, "detector"],
            ((*k, t) for k, t in snap.last_alarm.items()),
        )


SLICE = SEGMENT


class QualityCollector(Collector):
    """Labels, the join and quality scores, built fresh at each scrape."""

    def __init__(self, quality: Quality, hidden: Callable[[], bool] = lambda: False) -> None:
        self.quality = quality
        self.hidden = hidden  # while the engine rebuilds (repartition): no version series

    def collect(self) -> Iterator[Metric]:
        if self.hidden():
            return
        snap = self.quality.snapshot()
        g, c = GaugeMetricFamily, CounterMetricFamily
        yield _family(
            g,
            "streamwatch_quality_objective",
            "A model's quality objective from the config (models[].objectives): the score "
            "its versions and slices should reach.",
            ["model", "score"],
            (
                (model, score, target)
                for model, spec in self.quality.specs.items()
                for score, target in spec.objectives.items()
            ),
        )
        yield _family(
            g,
            "streamwatch_window_score",
            "A quality score of labelled predictions in a window (by prediction "
            "event time; events_N: the last N labelled).",
            [*SLICE, "score", "window"],
            snap.scores,
        )
        yield _family(
            g,
            "streamwatch_estimated_score",
            "Binary models, and multiclass models with class probabilities: the score "
            "expected from the predicted probabilities, before labels arrive "
            "(confidence-based estimation).",
            [*SLICE, "score", "window"],
            snap.estimated,
        )
        yield _family(
            g,
            "streamwatch_estimated_score_error",
            "Estimate minus realized score, on the window's labelled predictions.",
            [*SLICE, "score", "window"],
            snap.estimate_error,
        )
        totals = snap.totals
        yield _family(
            c,
            "streamwatch_labelled_events",
            "Predictions joined to a label.",
            SLICE,
            ((*k, t.events) for k, t in totals.items()),
        )
        yield _family(
            c,
            "streamwatch_labelled_correct",
            "Labelled predictions that were right (classification).",
            SLICE,
            (
                (*k, _correct(snap.tasks[k[0]], t))
                for k, t in totals.items()
                if snap.tasks[k[0]] != "regression"
            ),
        )
        cells = ("tp", "fp", "fn", "tn")
        yield _family(
            c,
            "streamwatch_confusion_events",
            "Binary models: labelled predictions per confusion-matrix cell.",
            [*SLICE, "cell"],
            (
                (*k, cell, t.get("cells")[i])
                for k, t in totals.items()
                if snap.tasks[k[0]] == "binary"
                for i, cell in enumerate(cells)
            ),
        )
        yield _family(
            c,
            "streamwatch_class_events",
            "Multiclass models, whole version (slice __all__): labelled predictions per "
            "class and cell (tp, fp, fn), for exact macro scores across workers.",
            [*SLICE, "class", "cell"],
            (
                (*k, name, cell, t.get(cell)[code])
                for k, t in totals.items()
                if snap.tasks[k[0]] == "multiclass" and k[2] == "__all__"
                for code, name in enumerate(snap.class_names[k[0]])
                for cell in ("tp", "fp", "fn")
            ),
        )
        yield _family(
            c,
            "streamwatch_loss_sum",
            "Sums of per-prediction log loss and Brier score (binary models, and "
            "multiclass models with class probabilities).",
            [*SLICE, "loss"],
            (
                (*k, loss, t.get(loss)[0])
                for k, t in totals.items()
                if snap.tasks[k[0]] == "binary" or t.get("scored")[0] > 0
                for loss in ("log_loss", "brier")
            ),
        )
        yield _family(
            c,
            "streamwatch_labelled_scored_events",
            "Multiclass models: labelled predictions that carried class probabilities "
            "(the divisor of their loss sums).",
            SLICE,
            (
                (*k, t.get("scored")[0])
                for k, t in totals.items()
                if snap.tasks[k[0]] == "multiclass" and t.get("scored")[0] > 0
            ),
        )
        yield _family(
            c,
            "streamwatch_regression_error_sum",
            "Regression models: sums of absolute, squared and signed errors.",
            [*SLICE, "error"],
            (
                (*k, e, t.get(e)[0])
                for k, t in totals.items()
                if snap.tasks[k[0]] == "regression"
                for e in ("abs", "squared", "signed")
            ),
        )
        yield _family(
            g,
            "streamwatch_predictions_pending",
            "Predictions waiting for their label (owned partitions).",
            ["model"],
            snap.pending.items(),
        )
        yield _family(
            c,
            "streamwatch_predictions_expired_unlabelled",
            "Predictions whose label did not come within labels.ttl_seconds.",
            VERSION,
            ((*k, n) for k, n in snap.expired.items()),
        )
        yield _family(
            c,
            "streamwatch_predictions_duplicate",
            "Predictions whose id was already waiting (ignored).",
            ["model"],
            snap.duplicate_predictions.items(),
        )
        yield _family(
            c,
            "streamwatch_labels_joined",
            "Labels joined to their prediction.",
            VERSION,
            ((*k, n) for k, n in snap.joined.items()),
        )
        yield _family(
            c,
            "streamwatch_labels_unmatched",
            "Labels with no waiting prediction after labels.early_hold_seconds: "
            "unknown ids, expired predictions and repeats of joined labels.",
            [],
            [(snap.unmatched_labels,)],
        )
        yield _family(
            g,
            "streamwatch_labels_early_held",
            "Labels waiting for a prediction not seen yet (bounded by "
            "labels.early_hold_max_labels).",
            [],
            [(snap.early_held,)],
        )
        yield _family(
            c,
            "streamwatch_labels_early_evicted",
            "Held labels released because the hold was over labels.early_hold_max_labels "
            "(also counted as unmatched).",
            [],
            [(snap.evicted_labels,)],
        )
        yield _family(
            c,
            "streamwatch_labels_duplicate",
            "Repeated labels for a prediction not yet seen (the first one wins).",
            [],
            [(snap.duplicate_labels,)],
        )
        yield _family(
            g,
            "streamwatch_label_coverage_ratio",
            "Share of predictions that got their label before the TTL: joined over "
            "joined plus expired.",
            VERSION,
            ((*k, n / (n + snap.expired.get(k, 0))) for k, n in snap.joined.items()),
        )
        yield _family(
            c,
            "streamwatch_slice_overflow",
            "Events whose slice value was past the slice's max_values (counted under __other__).",
            ["model", "slice"],
            ((*k, n) for k, n in snap.overflow.items()),
        )
        yield _family(
            g,
            "streamwatch_slice_values",
            "Slice values tracked (bounded).",
            ["model", "slice"],
            ((*k, n) for k, n in snap.tracked.items()),
        )
        yield _family(
            c,
            "streamwatch_concept_drift_alarms",
            "river's detector fired on a model version's or slice's error stream.",
            [*SLICE, "detector"],
            ((*k, n) for k, n in snap.concept_alarms.items()),
        )
        yield _family(
            g,
            "streamwatch_concept_drift_last_alarm_timestamp_seconds",
            "Label event time of the labelled prediction that raised the latest concept "
            "drift alarm.",
            [*SLICE, "detector"],
            ((*k, t) for k, t in snap.concept_last_alarm.items()),
        )


def _correct(task: str, totals: Counts) -> float:
    if task == "binary":
        cells = totals.get("cells")
        return float(cells[0] + cells[3])
    return float(totals.get("correct")[0])


class HealthCollector(Collector):
    """``streamwatch_ready``: what ``/readyz`` answers, as a series alerts can use."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        ok, _ = self.health.ready()
        yield _family(
            GaugeMetricFamily,
            "streamwatch_ready",
            "1 when the worker is ready (consuming, committing), 0 otherwise; /readyz says why.",
            [],
            [(1.0 if ok else 0.0,)],
        )


class Health:
    """Liveness and readiness as the worker reports them."""

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.assigned = 0
        self.last_poll = time.monotonic()
        self.problem: str | None = None  # what keeps the worker from checkpointing
        # repartition: the engine rebuilds its internal partitions' state from the start
        self.rebuilding = False

    def ready(self) -> tuple[bool, str]:
        if self.problem is not None:
            return False, self.problem
        if self.assigned == 0:
            return False, "no partitions assigned"
        idle = time.monotonic() - self.last_poll
        if idle > self.stall_seconds:
            return False, f"no poll for {idle:.0f}s (stalled)"
        return True, f"consuming {self.assigned} partition(s)"
