"""Replay: the worker's engine over recorded JSONL files, in event-time order.

Every line is one message value, exactly as it would arrive on the topic. Lines are decoded
by the same decoder, sorted by event time (stable), and applied in micro-batches of
``worker.batch_size`` to the same monitor the worker runs. The output folder gets:

* ``alarms.json``: every alarm with its event time, event index (position in event-time
  order), line number, model, version, signal, feature, detector, statistic and threshold;
* ``timeline.csv``: every exported score and detector ratio, every ``every`` events.

With ``--labels``, labels join their predictions as the worker would (each label once the
replay has reached its timestamp) and the timeline also carries the quality scores
(``signal="quality"``, the slice in the ``feature`` column) and their estimates.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamwatch.baseline import load_profiles
from streamwatch.config import Settings
from streamwatch.decode import Decoder, Label, Prediction, Rejection
from streamwatch.monitor import Alarm, Monitor
from streamwatch.progress import Progress
from streamwatch.quality import ConceptAlarm, Quality


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


def decode_lines(
    decoder: Decoder, lines: Iterable[bytes], topic: str, labels: bool, result: ReplayResult
) -> list[tuple[int, Prediction | Label]]:
    records: list[tuple[int, Prediction | Label]] = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        record = (decoder.label if labels else decoder.prediction)(
            line, None, None, topic, 0, number
        )
        if isinstance(record, Rejection):
            result.rejected[record.reason] = result.rejected.get(record.reason, 0) + 1
        else:
            records.append((number, record))
    return records


def run(
    settings: Settings,
    predictions: Path,
    labels: Path | None = None,
    monitor: Monitor | None = None,
    every: int = 1000,
    timeline: Path | None = None,
) -> ReplayResult:
    """Replay files through a monitor; write the timeline CSV if a path is given."""
    decoder = Decoder(settings)
    profiles = load_profiles(settings)
    quality = Quality(settings, profiles)
    monitor = monitor or Monitor(settings, profiles, quality.slicers)
    result = ReplayResult()
    with predictions.open("rb") as f:
        decoded = decode_lines(decoder, f, settings.topics.predictions, False, result)
    label_records: list[Label] = []
    if labels is not None:
        with labels.open("rb") as f:
            label_records = [
                r
                for _, r in decode_lines(decoder, f, settings.topics.labels, True, result)
                if isinstance(r, Label)
            ]
        result.labels = len(label_records)
        label_records.sort(key=lambda lb: lb.timestamp)
    next_label = 0
    decoded.sort(key=lambda item: item[1].timestamp)
    events: list[Prediction] = []
    for index, (line, record) in enumerate(decoded):
        assert isinstance(record, Prediction)
        # one partition, offsets in event-time order: the event index of every alarm
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
        result.lines[index] = line
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
    batch = settings.worker.batch_size
    next_row = every
    try:
        for start in range(0, len(events), batch):
            chunk = events[start : start + batch]
            result.alarms += monitor.apply(chunk)
            # labels join as they would have: those stamped up to this batch's newest event
            newest = chunk[-1].timestamp
            end = next_label
            while end < len(label_records) and label_records[end].timestamp <= newest:
                end += 1
            if start + len(chunk) == len(events):
                end = len(label_records)  # the rest of the labels, after the last prediction
            result.concept_alarms += quality.apply(chunk, label_records[next_label:end])
            quality.take_label_delays()
            next_label = end
            done = start + len(chunk)
            if writer is not None and (done >= next_row or done == len(events)):
                _timeline_rows(writer, monitor, quality, done, chunk[-1].timestamp)
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
    rows = [
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
    path.write_text(json.dumps(rows, indent=1))
