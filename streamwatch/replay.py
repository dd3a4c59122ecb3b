"""Replay: recorded JSONL files through the worker's own loop.

Every line is one message value, exactly as it would arrive on the topic: each file is
partition 0 of its topic, in arrival order, offset = line number. They are read through the
one loop (:mod:`streamwatch.loop`), as a worker reads Kafka: the same decoding and admission,
the same dead-letter reasons (counted here), the topics read in step by event time
(``event_time.align_seconds``; replay always aligns, with 0 when it is off), the same event
order, version cap, monitor and quality side. So replay raises the alarms a live worker
raises on the same messages, and a record more out of order than
``event_time.reorder_seconds`` is late here as it is there. The output folder gets:

* ``alarms.json``: every alarm, drift and concept (quality), with its event time, the file
  and line that raised it (a quality alarm: the label, and its prediction id), event index
  (drift: position among the predictions in their one order), model, version, slice,
  signal, feature, detector, and for drift alarms the statistic and threshold;
* ``timeline.csv``: every exported score and detector ratio, every ``every`` events, and
  with labels the quality scores (``signal="quality"``) and their estimates.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from streamwatch.app import build
from streamwatch.config import Settings
from streamwatch.loop import Loop
from streamwatch.monitor import Monitor
from streamwatch.pipeline import Outcome
from streamwatch.progress import Progress
from streamwatch.quality import Quality
from streamwatch.recorded import RecordedSource, file_messages
from streamwatch.records import Alarm, ConceptAlarm

TIMELINE_COLUMNS = [
    "event_index",
    "event_time",
    "model",
    "model_version",
    "slice",
    "signal",
    "feature",
    "window",
    "statistic",
    "value",
]


@dataclass
class ReplayResult:
    predictions: int = 0
    labels: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    alarms: list[Alarm] = field(default_factory=list)
    concept_alarms: list[ConceptAlarm] = field(default_factory=list)
    event_index: dict[int, int] = field(default_factory=dict)  # alarmed line -> event index
    out_of_order: int = 0  # applied late: more out of order than event_time.reorder_seconds
    forced: int = 0  # applied early: forced out by event_time.max_waiting_events


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def run(
    settings: Settings,
    predictions: Path,
    labels: Path | None = None,
    every: int = 1000,
    timeline: Path | None = None,
) -> ReplayResult:
    """Replay files through the worker's loop; write the timeline CSV if a path is given."""
    pipeline = build(settings).pipeline
    topics = (settings.topics.predictions, settings.topics.labels)
    read = [0]  # bytes read, for the progress bar
    streams = [(file_messages(predictions, topics[0], read), [(topics[0], 0)])]
    size = predictions.stat().st_size
    if labels is not None:
        streams.append((file_messages(labels, topics[1], read), [(topics[1], 0)]))
        size += labels.stat().st_size
    source = RecordedSource(topics, streams)
    loop = Loop(source, pipeline, None, settings.event_time.align_seconds or 0.0)
    result = ReplayResult()
    out = timeline.open("w", newline="") if timeline else None
    writer = None if out is None else csv.writer(out)
    if writer is not None:
        writer.writerow(TIMELINE_COLUMNS)
    progress = Progress(size, "replaying (bytes)")
    next_row, written, newest = every, 0, 0.0

    def each(outcome: Outcome) -> None:
        nonlocal next_row, written, newest
        first = result.predictions
        result.predictions += len(outcome.predictions)
        result.labels += outcome.labels
        for r in outcome.rejected:
            result.rejected[r.reason] = result.rejected.get(r.reason, 0) + 1
        if outcome.alarms:
            index = {p.offset: first + i for i, p in enumerate(outcome.predictions)}
            for alarm in outcome.alarms:
                result.event_index[alarm.offset] = index[alarm.offset]
        result.alarms += outcome.alarms
        result.concept_alarms += outcome.concept_alarms
        done = result.predictions
        if outcome.predictions:
            newest = outcome.predictions[-1].timestamp
        if writer is not None and done >= next_row:
            _timeline_rows(writer, pipeline.monitor, pipeline.quality, done, newest)
            next_row, written = done + every, done
        progress.update(read[0])

    try:
        loop.run_to_end(settings.worker.batch_size, each)
        if writer is not None and written < result.predictions:  # the end of the stream
            _timeline_rows(writer, pipeline.monitor, pipeline.quality, result.predictions, newest)
        result.out_of_order = _total(pipeline.telemetry.out_of_order)
        result.forced = _total(pipeline.telemetry.forced)
    finally:
        progress.close()
        if out is not None:
            out.close()
    return result


def _total(counter: Counter) -> int:
    """A counter's sum over its label sets."""
    samples = (s for m in counter.collect() for s in m.samples)
    return int(sum(s.value for s in samples if s.name.endswith("_total")))


def _timeline_rows(
    writer: Any, monitor: Monitor, quality: Quality, done: int, newest: float
) -> None:
    snap = monitor.snapshot()
    when = _iso(newest)
    scored = quality.snapshot()
    for kind, rows in (("", scored.scores), ("estimated_", scored.estimated)):
        for model, version, slice_name, score, window, value in rows:
            writer.writerow(
                [
                    done,
                    when,
                    model,
                    version,
                    slice_name,
                    "quality",
                    "",
                    window,
                    f"{kind}{score}",
                    f"{value:.6g}",
                ]
            )
    for *segment, signal, feature, statistic, window, value in snap.scores:
        writer.writerow([done, when, *segment, signal, feature, window, statistic, f"{value:.6g}"])
    for *segment, signal, feature, detector, value in snap.detector_ratio:
        writer.writerow(
            [done, when, *segment, signal, feature, "", f"{detector}_ratio", f"{value:.6g}"]
        )


def write_alarms(result: ReplayResult, path: Path) -> None:
    """Every alarm, drift and concept, in event-time order."""
    rows: list[dict[str, Any]] = [
        {
            "event_time": _iso(a.event_time),
            "event_index": result.event_index.get(a.offset),
            "file": "predictions",
            "line": a.offset,
            "prediction_id": None,
            "model": a.model,
            "model_version": a.model_version,
            "slice": a.slice,
            "signal": a.signal,
            "feature": a.feature,
            "detector": a.detector,
            "statistic": a.statistic,
            "threshold": a.threshold,
        }
        for a in result.alarms
    ]
    rows += [
        {
            "event_time": _iso(c.event_time),
            "event_index": None,
            "file": "predictions" if c.on_predictions else "labels",
            "line": c.offset,
            "prediction_id": c.prediction_id,
            "model": c.model,
            "model_version": c.model_version,
            "slice": c.slice,
            "signal": "quality",
            "feature": None,
            "detector": c.detector,
            "statistic": None,
            "threshold": None,
        }
        for c in result.concept_alarms
    ]
    rows.sort(key=lambda row: row["event_time"])
    path.write_text(json.dumps(rows, indent=1))
