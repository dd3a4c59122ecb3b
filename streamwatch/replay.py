"""Replay: the worker's pipeline over recorded JSONL files, in event-time order.

Every line is one message value, exactly as it would arrive on the topic (the file is a
partition, in arrival order). Lines go through the worker's own stages
(:class:`streamwatch.worker.Pipeline`): the same decoding and admission (event-time bounds,
in file order, as the worker admits in arrival order), the same version cap, monitor and
quality side. Admitted predictions are then sorted by event time (stable) and applied in
micro-batches of ``worker.batch_size``; labels join as the worker would, each once the
replay has reached its timestamp. The output folder gets:

* ``alarms.json``: every alarm, drift and concept (quality), with its event time, event
  index (position in event-time order), line number, model, version, slice, signal,
  feature, detector, and for drift alarms the statistic and threshold;
* ``timeline.csv``: every exported score and detector ratio, every ``every`` events, and
  with labels the quality scores (``signal="quality"``) and their estimates.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamwatch.app import build
from streamwatch.config import Settings
from streamwatch.monitor import Monitor
from streamwatch.ordering import order_key
from streamwatch.progress import Progress
from streamwatch.quality import Quality
from streamwatch.records import Alarm, ConceptAlarm, Label, Prediction, Record
from streamwatch.worker import Decoded, Outcome, Pipeline


@dataclass
class ReplayResult:
    predictions: int = 0
    labels: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    alarms: list[Alarm] = field(default_factory=list)
    concept_alarms: list[ConceptAlarm] = field(default_factory=list)
    lines: dict[int, int] = field(default_factory=dict)  # event index -> line number


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def _records(path: Path, topic: str) -> Iterator[Record]:
    """The file's lines as messages of partition 0, offset = line number."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield Record(topic, line, None, 0, number)


def _decode(pipeline: Pipeline, path: Path, topic: str, batch: int) -> Decoded:
    """Decode and admit a whole file, in arrival order, batch by batch."""
    predictions: list[Prediction] = []
    labels: list[Label] = []
    rejected = []
    chunk: list[Record] = []
    for record in _records(path, topic):
        chunk.append(record)
        if len(chunk) == batch:
            decoded = pipeline.decode(chunk)
            predictions += decoded.predictions
            labels += decoded.labels
            rejected += decoded.rejected
            chunk = []
    decoded = pipeline.decode(chunk)
    return Decoded(
        predictions + decoded.predictions, labels + decoded.labels, rejected + decoded.rejected
    )


def run(
    settings: Settings,
    predictions: Path,
    labels: Path | None = None,
    every: int = 1000,
    timeline: Path | None = None,
) -> ReplayResult:
    """Replay files through the worker's pipeline; write the timeline CSV if a path is given."""
    pipeline = build(settings).pipeline
    batch = settings.worker.batch_size
    result = ReplayResult()
    read = _decode(pipeline, predictions, settings.topics.predictions, batch)
    rejected = list(read.rejected)
    label_records: list[Label] = []
    if labels is not None:
        label_read = _decode(pipeline, labels, settings.topics.labels, batch)
        rejected += label_read.rejected
        label_records = sorted(label_read.labels, key=order_key)
        result.labels = len(label_records)
    for r in rejected:
        result.rejected[r.reason] = result.rejected.get(r.reason, 0) + 1
    events: list[Prediction] = []
    # A file is one partition in arrival order, but replay has it all: it sorts it in the
    # one order the worker's event order releases, so no record is out of order here.
    for index, record in enumerate(sorted(read.predictions, key=order_key)):
        # offsets in that order: the event index of every alarm
        events.append(
            Prediction(
                record.prediction_id,
                record.model,
                record.model_version,
                record.timestamp,
                record.features,
                record.prediction,
                record.scores,
                record.predicted_label,
                record.attributes,
                0,
                index,
            )
        )
        result.lines[index] = record.offset
    result.predictions = len(events)
    writer = None
    out = timeline.open("w", newline="") if timeline else None
    if out is not None:
        writer = csv.writer(out)
        writer.writerow(
            [
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
        )
    progress = Progress(len(events), "replaying")
    next_row, next_label = every, 0
    try:
        # the rejected messages are counted (and type errors seen) with the first batch
        pipeline.reject(rejected, None)
        outcome = pipeline.apply(Decoded([], [], rejected))
        for start in range(0, len(events), batch):
            chunk = events[start : start + batch]
            # through the worker's event order, as a partition of each topic; the labels
            # read up to this batch's newest prediction, as the alignment reads them
            newest = chunk[-1].timestamp
            end = next_label
            while end < len(label_records) and label_records[end].timestamp <= newest:
                end += 1
            pipeline.order.add(chunk, label_records[next_label:end], 0.0)
            outcome = pipeline.apply(Decoded(*pipeline.order.release(0.0), []))
            if start + len(chunk) == len(events):  # the end: the rest, and every label
                pipeline.order.add([], label_records[end:], 0.0)
                end = len(label_records)
                drained = pipeline.drain()
                outcome = Outcome(
                    [],
                    outcome.alarms + drained.alarms,
                    outcome.concept_alarms + drained.concept_alarms,
                )
            result.alarms += outcome.alarms
            result.concept_alarms += outcome.concept_alarms
            next_label = end
            done = start + len(chunk)
            if writer is not None and (done >= next_row or done == len(events)):
                _timeline_rows(writer, pipeline.monitor, pipeline.quality, done, newest)
                next_row = done + every
            progress.update(done)
    finally:
        progress.close()
        if out is not None:
            out.close()
    return result


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
            "event_index": a.offset,
            "line": result.lines.get(a.offset),
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
            "line": None,
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
