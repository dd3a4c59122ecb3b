"""Throughput: streamwatch on a real broker, side by side with the limit and the alternatives.

    .venv/bin/python bench/throughput/run.py [--events 1000000] [--runs 3]

Starts its own single-node broker, preloads ``--events`` predictions (12 numeric and
2 categorical features, a 20-value slice, a binary score) and a label for each into
4-partition topics, then measures, one after the other on the same topic contents:

* ``limit``: a plain confluent-kafka consumer at its best settings with ``orjson.loads``,
  both topics;
* ``streamwatch``: one ``streamwatch run`` worker, predictions only (an empty labels topic);
* ``streamwatch_labels``: one worker, predictions and their labels;
* ``per_event``: the loop a user writes by hand, doing the same work as the worker with
  labels: pydantic ``model_validate_json`` per message, a river ADWIN per numeric feature,
  the label join in a dict, and per slice a river ``Accuracy`` and an ADWIN on the errors;
* ``window_batch``: a windowed batch recompute, as batch tools work: the last 10,000
  predictions are kept, and after every 1,000 messages (the freshness a worker's
  micro-batch gives) each numeric feature gets a two-sample Kolmogorov-Smirnov test against
  the reference window, each categorical one a chi-square test, and each slice its accuracy
  on the joined labels (scipy; Evidently is not installed, see the README);
* ``streamwatch_2_workers``: two workers in one consumer group, predictions and labels;
* ``streamwatch_2_workers_repartition``: the same with ``engine.mode: repartition`` (each
  version's state in one worker), counted as the engine applies the events (stage 2), not
  as stage 1 forwards them.

Each figure is the median of ``--runs`` runs. events/s and CPU-seconds per million events
are taken between 10% and 90% of a run's messages (steady state, without start-up and the
end of the stream); peak RSS is the process's high-water mark. Then:

* produce-to-``/metrics`` latency: a producer sends predictions (and their labels 2 s later)
  with the wall clock as event time at half of ``streamwatch_labels``' rate, while
  ``streamwatch_last_event_timestamp_seconds`` is scraped every 50 ms: per prediction, the
  first scrape that shows it, minus its event time. Then again with
  ``event_time.reorder_seconds`` at 0.25 s, a quarter of its default: the event order's
  wait is most of the latency;
* start-up to ready: from starting the process to ``/readyz`` answering 200;
* cost as the work grows: ``streamwatch`` (predictions only) on ``--scale-events``
  predictions with 12, 50 and 200 numeric features, and 20 and 200 slice values.

Writes ``bench/results.json`` and ``bench/throughput/results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
import kafka_local  # noqa: E402  (stdlib-only script, imported by path)

from bench.produce import send_all  # noqa: E402

PARTITIONS = 4
CATEGORIES = ("card", "bank", "wallet", "cash", "crypto")
DEVICES = ("ios", "android", "web")
T0_MS = int((time.time() - 86_400) * 1000)  # a day ago: inside the admission bounds
SPACING_MS = 10
LABEL_DELAY_MS = 60_000
WINDOW = 10_000  # window_batch: the window and the reference
SHORT = 0.25  # the shorter event_time.reorder_seconds the latency is measured with, too
EVERY = 1_000  # window_batch: a recompute after this many messages
TICK = 1 / os.sysconf("SC_CLK_TCK")
Message = tuple[bytes, bytes]


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Shape:
    numeric: int = 12
    slice_values: int = 20

    @property
    def name(self) -> str:
        return f"f{self.numeric}-s{self.slice_values}"


def _dataset(n: int, shape: Shape, seed: int = 1) -> tuple[list[Message], list[Message]]:
    """``n`` predictions and a label for each, as (key, JSON value), keyed by prediction id."""
    rng = np.random.default_rng(seed)
    numeric = rng.normal(0.0, 1.0, (n, shape.numeric)).round(4)
    method = rng.integers(0, len(CATEGORIES), n)
    device = rng.integers(0, len(DEVICES), n)
    region = rng.integers(0, shape.slice_values, n)
    score = rng.uniform(0.0, 1.0, n).round(4)
    truth = rng.uniform(0.0, 1.0, n) < score  # a calibrated model
    names = [f"x{j}" for j in range(shape.numeric)]
    predictions, labels = [], []
    for i in range(n):
        features: dict[str, float | str] = dict(zip(names, numeric[i].tolist(), strict=True))
        features["method"] = CATEGORIES[method[i]]
        features["device"] = DEVICES[device[i]]
        t = T0_MS + i * SPACING_MS
        key = f"p{i:09d}".encode()
        predictions.append(
            (
                key,
                orjson.dumps(
                    {
                        "prediction_id": f"p{i:09d}",
                        "model": "fraud",
                        "model_version": "v1",
                        "timestamp": t,
                        "features": features,
                        "prediction": float(score[i]),
                        "attributes": {"region": f"r{region[i]}"},
                    }
                ),
            )
        )
        label = {
            "prediction_id": f"p{i:09d}",
            "label": bool(truth[i]),
            "timestamp": t + LABEL_DELAY_MS,
        }
        labels.append((key, orjson.dumps(label)))
    return predictions, labels


def _create(bootstrap: str, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    specs = [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in names]
    for future in admin.create_topics(specs).values():
        future.result(timeout=30)


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
        }
    )


def _produce(bootstrap: str, topic: str, messages: list[Message]) -> None:
    """Keyed by prediction id: a prediction and its label land in the same partition."""
    producer = _producer(bootstrap)
    send_all(producer, topic, messages, 300)


# ---------------------------------------------------------------- measuring


class Meter:
    """Wall clock and CPU at 10% and 90% of ``total`` messages (the steady state). A run too
    short to see both apart (a few thousand events) is measured from the meter's start."""

    def __init__(self, total: int, cpu: Callable[[], float]) -> None:
        self.total, self.cpu = total, cpu
        self.start = (0, time.perf_counter(), cpu())
        self.marks: list[tuple[int, float, float]] = []  # (count, wall, cpu)
        self._next = 0.1

    def seen(self, count: int) -> None:
        if self._next <= 0.9 and count >= self._next * self.total:
            self.marks.append((count, time.perf_counter(), self.cpu()))
            self._next = 0.9 if self._next < 0.9 else 1.1

    @property
    def done(self) -> bool:
        return len(self.marks) == 2

    def result(self, peak_rss_mb: float) -> dict[str, float]:
        first, last = self.marks
        if last[0] <= first[0]:
            first = self.start
        (c0, w0, u0), (c1, w1, u1) = first, last
        return {
            "events_per_s": (c1 - c0) / (w1 - w0),
            "cpu_s_per_million": (u1 - u0) / (c1 - c0) * 1e6,
            "peak_rss_mb": peak_rss_mb,
        }


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK  # utime + stime


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), ""
    except OSError:
        return 0, ""


def _samples(port: int, *names: str) -> dict[str, float]:
    """Sums of the named series (labels aside), from a filtered scrape."""
    query = "&".join(f"name[]={n}" for n in names)
    status, text = _get(f"http://127.0.0.1:{port}/metrics?{query}")
    out: dict[str, float] = {}
    if status != 200:
        return out
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _applied(port: int) -> float:
    """Predictions and labels the engine applied (repartition's stage 2), from one whole
    scrape: the engine's series come from a collector, which the ``name[]`` filter does not
    spare (prometheus_client runs every collector without names on a filtered scrape too)."""
    status, text = _get(f"http://127.0.0.1:{port}/metrics")
    total = 0.0
    for line in text.splitlines() if status == 200 else []:
        if line.startswith("streamwatch_predictions_total{") or (
            line.startswith("streamwatch_labelled_events_total{") and 'slice="__all__"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _max_sample(port: int, name: str, label: str) -> float:
    status, text = _get(f"http://127.0.0.1:{port}/metrics?name[]={name}")
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if status == 200 and line.startswith(name) and label in line
    ]
    return max(values, default=0.0)


# ---------------------------------------------------------------- streamwatch


def _config(
    bootstrap: str,
    predictions: str,
    labels: str,
    port: int,
    shape: Shape,
    group: str,
    mode: str = "local",
) -> dict[str, Any]:
    features: list[dict[str, str]] = [
        {"name": f"x{j}", "type": "numeric"} for j in range(shape.numeric)
    ]
    features += [
        {"name": "method", "type": "categorical"},
        {"name": "device", "type": "categorical"},
    ]
    return {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": group},
        "topics": {"predictions": predictions, "labels": labels, "dead_letters": "dead-letters"},
        "models": [
            {
                "name": "fraud",
                "task": "binary",
                "features": features,
                "slices": [
                    {"name": "region", "keys": ["region"], "max_values": shape.slice_values}
                ],
            }
        ],
        "exporter": {"address": "127.0.0.1", "port": port},
        "engine": {"mode": mode},
    }


class Workers:
    """``streamwatch run`` processes in one consumer group."""

    def __init__(
        self,
        bootstrap: str,
        topics: tuple[str, str],
        shape: Shape,
        count: int,
        folder: Path,
        mode: str = "local",
        env: dict[str, str] | None = None,
    ) -> None:
        group = f"bench-{uuid.uuid4().hex[:8]}"
        self.mode = mode
        self.ports = [kafka_local.free_port() for _ in range(count)]
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started = time.perf_counter()
        self.ready_s: list[float] = []
        for port in self.ports:
            path = folder / f"{group}-{port}.yaml"
            config = _config(bootstrap, *topics, port, shape, group, mode)
            path.write_text(yaml.safe_dump(config))
            with (folder / f"{group}-{port}.log").open("wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "streamwatch", "run", "--config", str(path)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                        env={**os.environ, **(env or {})},
                    )
                )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while _get(f"http://127.0.0.1:{port}/readyz", 1.0)[0] != 200:
                self._alive()
                if time.monotonic() > deadline:
                    raise TimeoutError("a worker did not get ready")
                time.sleep(0.02)
            self.ready_s.append(time.perf_counter() - self.started)

    def _alive(self) -> None:
        for p in self.processes:
            if p.poll() is not None:
                raise RuntimeError(f"a worker exited with {p.returncode}; see its log")

    def events(self) -> float:
        """Messages done with: counted as read (one engine per worker), or as the engine
        applies them (repartition: stage 1 counts them as it forwards them)."""
        if self.mode == "repartition":
            return sum(_applied(port) for port in self.ports)
        return sum(
            _samples(port, "streamwatch_events_total").get("streamwatch_events_total", 0.0)
            for port in self.ports
        )

    def cpu(self) -> float:
        return sum(_proc_cpu(p.pid) for p in self.processes)

    def peak_rss_mb(self) -> float:
        return max(_peak_rss_mb(p.pid) for p in self.processes)

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.terminate()
        for p in self.processes:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def _streamwatch(
    bootstrap: str,
    topics: tuple[str, str],
    total: int,
    shape: Shape,
    folder: Path,
    workers: int = 1,
    mode: str = "local",
) -> dict[str, float]:
    """Run worker(s) on the backlog until ``total`` messages are counted."""
    group = Workers(bootstrap, topics, shape, workers, folder, mode)
    try:
        group.wait_ready()
        meter = Meter(total, group.cpu)
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            group._alive()
            count = int(group.events())
            meter.seen(count)
            if count >= total:
                break
            time.sleep(0.1)
        if not meter.done:
            raise RuntimeError(f"counted {count:,} of {total:,} messages in 30 min")
        result = meter.result(group.peak_rss_mb())
        result["ready_s"] = max(group.ready_s)
        return result
    finally:
        group.stop()


def _latency(
    bootstrap: str,
    rate: float,
    seconds: float,
    shape: Shape,
    folder: Path,
    reorder_seconds: float | None = None,
) -> dict[str, float]:
    """Predictions at ``rate``/s with the wall clock as event time, their labels 2 s later;
    per prediction, the first scrape whose newest event time covers it, minus its time.
    ``reorder_seconds``: the worker's ``event_time.reorder_seconds``, else its default."""
    suffix = uuid.uuid4().hex[:6]
    topics = (f"latency-{suffix}-predictions", f"latency-{suffix}-labels")
    _create(bootstrap, *topics)
    env = {}
    if reorder_seconds is not None:
        env["STREAMWATCH_EVENT_TIME__REORDER_SECONDS"] = str(reorder_seconds)
    group = Workers(bootstrap, topics, shape, 1, folder, env=env)
    port = group.ports[0]
    scrapes: list[tuple[float, float]] = []
    sent: list[float] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            value = _max_sample(port, "streamwatch_last_event_timestamp_seconds", "predictions")
            scrapes.append((time.time(), value))
            time.sleep(0.05)

    try:
        group.wait_ready()
        producer = _producer(bootstrap)
        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
        rng = np.random.default_rng(2)
        started = time.time()
        i = 0
        while time.time() - started < seconds:
            due = int((time.time() - started) * rate)
            while i < due:
                now_ms = int(time.time() * 1000)
                value = orjson.dumps(
                    {
                        "prediction_id": f"p{i:09d}",
                        "model": "fraud",
                        "model_version": "v1",
                        "timestamp": now_ms,
                        "features": {
                            **{f"x{j}": float(x) for j, x in enumerate(rng.normal(size=12))},
                            "method": "card",
                            "device": "ios",
                        },
                        "prediction": 0.3,
                        "attributes": {"region": f"r{i % shape.slice_values}"},
                    }
                )
                producer.produce(topics[0], value=value, key=f"p{i:09d}".encode())
                j = i - int(2 * rate)
                if j >= 0:
                    label = {"prediction_id": f"p{j:09d}", "label": False, "timestamp": now_ms}
                    producer.produce(topics[1], value=orjson.dumps(label), key=f"p{j:09d}".encode())
                if i % 100 == 0:
                    sent.append(now_ms / 1000)
                i += 1
            producer.poll(0)
            time.sleep(0.005)
        producer.flush(30)
        time.sleep(3)
        stop.set()
        scraper.join()
    finally:
        group.stop()
    # the first 8 s hold the start-up (group join, partitions going idle), and the last 3 s
    # wait for the partitions to go idle once the producer stops: both left out
    measured = [t for t in sent if 8 < t - started < seconds - 3]
    delays = []
    for t in measured:
        seen = next((w for w, v in scrapes if v >= t), None)
        if seen is not None:
            delays.append(seen - t)
    if len(delays) < len(measured):
        raise RuntimeError(f"{len(measured) - len(delays)} predictions never showed on /metrics")
    return {
        "latency_p50_s": float(np.percentile(delays, 50)),
        "latency_p99_s": float(np.percentile(delays, 99)),
        "latency_rate": rate,
    }


# ---------------------------------------------------------------- the alternatives (children)


def _consumer(bootstrap: str, topics: list[str]) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 10,  # librdkafka's fetch pacing off: the limit
        }
    )
    consumer.subscribe(topics)
    return consumer


def _child_limit(bootstrap: str, topics: list[str], total: int) -> dict[str, float]:
    consumer = _consumer(bootstrap, topics)
    meter = Meter(total, time.process_time)
    count = 0
    loads = orjson.loads
    while count < total:
        for m in consumer.consume(10_000, 1.0):
            loads(m.value() or b"")
            count += 1
        meter.seen(count)
    consumer.close()
    return meter.result(_peak_rss_mb(os.getpid()))


def _child_per_event(bootstrap: str, topics: list[str], total: int) -> dict[str, float]:
    from pydantic import BaseModel
    from river import drift, metrics

    class PredictionIn(BaseModel):
        prediction_id: str
        model: str
        model_version: str
        timestamp: int
        features: dict[str, float | str]
        prediction: float
        attributes: dict[str, str]

    class LabelIn(BaseModel):
        prediction_id: str
        label: bool
        timestamp: int

    consumer = _consumer(bootstrap, topics)
    meter = Meter(total, time.process_time)
    detectors: dict[str, drift.ADWIN] = {}
    accuracy: dict[str, metrics.Accuracy] = {}
    errors: dict[str, drift.ADWIN] = {}
    pending: dict[str, tuple[bool, str]] = {}
    early: dict[str, bool] = {}
    alarms = 0

    def joined(predicted: bool, region: str, label: bool) -> int:
        fired = 0
        for key in ("__all__", region):
            if key not in accuracy:
                accuracy[key] = metrics.Accuracy()  # type: ignore[no-untyped-call]
                errors[key] = drift.ADWIN()  # type: ignore[no-untyped-call]
            accuracy[key].update(label, predicted)
            errors[key].update(float(predicted != label))  # type: ignore[no-untyped-call]
            fired += errors[key].drift_detected
        return fired

    count = 0
    while count < total:
        for m in consumer.consume(1_000, 1.0):
            if m.topic() == topics[0]:
                p = PredictionIn.model_validate_json(m.value())  # type: ignore[arg-type]
                for name, x in p.features.items():
                    if isinstance(x, float):
                        if name not in detectors:
                            detectors[name] = drift.ADWIN()  # type: ignore[no-untyped-call]
                        detectors[name].update(x)  # type: ignore[no-untyped-call]
                        alarms += detectors[name].drift_detected
                predicted = p.prediction >= 0.5
                region = p.attributes["region"]
                label = early.pop(p.prediction_id, None)
                if label is None:
                    pending[p.prediction_id] = (predicted, region)
                else:
                    alarms += joined(predicted, region, label)
            else:
                lab = LabelIn.model_validate_json(m.value())  # type: ignore[arg-type]
                found = pending.pop(lab.prediction_id, None)
                if found is None:
                    early[lab.prediction_id] = lab.label
                else:
                    alarms += joined(*found, lab.label)
            count += 1
        meter.seen(count)
    consumer.close()
    return meter.result(_peak_rss_mb(os.getpid()))


def _child_window_batch(bootstrap: str, topics: list[str], total: int) -> dict[str, float]:
    from scipy import stats

    consumer = _consumer(bootstrap, topics)
    meter = Meter(total, time.process_time)
    rows: list[list[float]] = []  # the window's numeric features
    categories: dict[str, list[str]] = {"method": [], "device": []}
    reference: np.ndarray[Any, np.dtype[np.float64]] | None = None
    reference_counts: dict[str, dict[str, int]] = {}
    pending: dict[str, tuple[bool, str]] = {}
    early: dict[str, bool] = {}
    outcomes: list[tuple[str, bool]] = []  # (region, correct) of the window's joined labels
    names: list[str] = []
    count = since = 0
    while count < total:
        for m in consumer.consume(1_000, 1.0):
            record = orjson.loads(m.value() or b"")
            if m.topic() == topics[0]:
                features = record["features"]
                if not names:
                    names = [k for k, v in features.items() if isinstance(v, float)]
                rows.append([features[k] for k in names])
                for k, values in categories.items():
                    values.append(features[k])
                predicted = record["prediction"] >= 0.5
                region = record["attributes"]["region"]
                label = early.pop(record["prediction_id"], None)
                if label is None:
                    pending[record["prediction_id"]] = (predicted, region)
                else:
                    outcomes.append((region, predicted == label))
            else:
                found = pending.pop(record["prediction_id"], None)
                if found is None:
                    early[record["prediction_id"]] = record["label"]
                else:
                    outcomes.append((found[1], found[0] == record["label"]))
            count += 1
            since += 1
            if since >= EVERY and len(rows) >= WINDOW:
                since = 0
                del rows[:-WINDOW]
                for values in categories.values():
                    del values[:-WINDOW]
                del outcomes[:-WINDOW]
                window = np.asarray(rows)
                if reference is None:
                    reference = window
                    reference_counts = {
                        k: {c: v.count(c) for c in set(v)} for k, v in categories.items()
                    }
                    continue
                for j in range(window.shape[1]):
                    stats.ks_2samp(reference[:, j], window[:, j])
                for k, values in categories.items():
                    seen = [values.count(c) for c in reference_counts[k]]
                    expected = np.asarray(list(reference_counts[k].values()), dtype=float)
                    stats.chisquare(seen, expected * sum(seen) / expected.sum())
                by_region: dict[str, list[bool]] = {}
                for region, correct in outcomes:
                    by_region.setdefault(region, []).append(correct)
                for results in by_region.values():
                    float(np.mean(results))
        meter.seen(count)
    consumer.close()
    return meter.result(_peak_rss_mb(os.getpid()))


CHILDREN = {
    "limit": _child_limit,
    "per_event": _child_per_event,
    "window_batch": _child_window_batch,
}


def _child(kind: str, bootstrap: str, topics: tuple[str, str], total: int) -> dict[str, float]:
    """Run one alternative in a process of its own (its CPU and RSS alone)."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--bootstrap",
            bootstrap,
            "--topics",
            ",".join(topics),
            "--total",
            str(total),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------- report


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _versions() -> dict[str, str]:
    import confluent_kafka

    return {
        "python": platform.python_version(),
        "confluent_kafka": metadata.version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "kafka": kafka_local.KAFKA_VERSION,
        **{name: metadata.version(name) for name in ("river", "pydantic", "numpy", "scipy")},
        "orjson": orjson.__version__,
    }


ROWS = [
    ("limit", "(a) the limit: plain consumer + `orjson.loads`, both topics"),
    ("streamwatch", "(b) one `streamwatch run` worker, predictions only"),
    ("streamwatch_labels", "(b) one worker, predictions and labels"),
    ("per_event", "(c) per-event loop: pydantic + river ADWIN, label join, river per slice"),
    ("window_batch", "(d) windowed batch recompute: scipy tests on the last 10,000, every 1,000"),
    ("streamwatch_2_workers", "(e) two workers in one group, predictions and labels (total)"),
    (
        "streamwatch_2_workers_repartition",
        "(f) two workers, `engine.mode: repartition` (one engine per version), as applied",
    ),
]


def _report(
    results: dict[str, Any], command: str, n: int, runs: int, versions: dict[str, str]
) -> str:
    b = results["streamwatch_labels"]
    lines = [
        f"`{command}`: {n:,} predictions (12 numeric, 2 categorical features, a 20-value "
        f"slice) and {n:,} labels on {PARTITIONS} partitions, one broker on the same 2-core "
        f"machine; medians of {runs} runs, all in one run of the benchmark.",
        "",
        "| what | events/s | CPU s per 10^6 events | peak RSS (MB) | streamwatch with labels "
        "÷ this (events/s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, what in ROWS:
        r = results[key]
        lines.append(
            f"| {what} | {r['events_per_s']:,.0f} | {r['cpu_s_per_million']:,.1f} "
            f"| {r['peak_rss_mb']:,.0f} | {b['events_per_s'] / r['events_per_s']:.2f} |"
        )
    one, two = results["streamwatch_labels"], results["streamwatch_2_workers"]
    rep = results["streamwatch_2_workers_repartition"]
    s = results["streamwatch"]
    lines += [
        "",
        "| streamwatch | value |",
        "| --- | ---: |",
        f"| predictions/s with their labels (one worker) | {b['events_per_s'] / 2:,.0f} |",
        f"| two workers: CPU per event ÷ one worker's | "
        f"{two['cpu_s_per_million'] / one['cpu_s_per_million']:.2f} |",
        f"| two workers with repartition: CPU per event ÷ one worker's | "
        f"{rep['cpu_s_per_million'] / one['cpu_s_per_million']:.2f} |",
        f"| produce-to-`/metrics` latency p50 / p99 (s) at {s['latency_rate']:,.0f} "
        f"predictions/s and their labels | {s['latency_p50_s']:.2f} / {s['latency_p99_s']:.2f} |",
        f"| the same with `event_time.reorder_seconds: {SHORT}` (default 1) | "
        f"{s[f'latency_p50_s_reorder_{SHORT}']:.2f} / {s[f'latency_p99_s_reorder_{SHORT}']:.2f} |",
        f"| start-up to ready (s) | {s['ready_s']:.2f} |",
        "",
        "| work (predictions only) | events/s | CPU s per 10^6 events | ÷ 12 features, 20 values |",
        "| --- | ---: | ---: | ---: |",
    ]
    scale = results["scaling"]
    base = scale["f12-s20"]["cpu_s_per_million"]
    for name, r in scale.items():
        numeric, values = name[1:].split("-s")
        lines.append(
            f"| {numeric} numeric features, {values} slice values | {r['events_per_s']:,.0f} "
            f"| {r['cpu_s_per_million']:,.1f} | {r['cpu_s_per_million'] / base:.2f} |"
        )
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="predictions (and labels)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--scale-events", type=int, default=100_000, help="per scaling row")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--table", type=Path, default=HERE / "results.md", help="Markdown table")
    parser.add_argument(
        "--only",
        help="measure only these (comma-separated keys, e.g. streamwatch_labels); "
        "prints them and writes nothing",
    )
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topics", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = CHILDREN[args.child](args.bootstrap, args.topics.split(","), args.total)
        print(json.dumps(result))
        return 0

    n, runs = args.events, args.runs
    command = ".venv/bin/python bench/throughput/run.py" + (
        "" if (n, runs) == (1_000_000, 3) else f" --events {n} --runs {runs}"
    )
    results: dict[str, Any] = {}
    print(f"building {n:,} predictions and {n:,} labels", flush=True)
    predictions, labels = _dataset(n, Shape())
    with tempfile.TemporaryDirectory() as folder, kafka_local.LocalKafka() as broker:
        bootstrap = broker.bootstrap_servers
        _create(bootstrap, "predictions", "labels", "no-labels")
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics(
            [NewTopic("dead-letters", num_partitions=1, replication_factor=1)]
        ).values():
            future.result(timeout=30)
        print("producing ...", flush=True)
        _produce(bootstrap, "predictions", predictions)
        _produce(bootstrap, "labels", labels)
        del predictions, labels
        both = ("predictions", "labels")
        plan: list[tuple[str, Callable[[], dict[str, float]]]] = [
            ("limit", lambda: _child("limit", bootstrap, both, 2 * n)),
            (
                "streamwatch",
                lambda: _streamwatch(
                    bootstrap, ("predictions", "no-labels"), n, Shape(), Path(folder)
                ),
            ),
            (
                "streamwatch_labels",
                lambda: _streamwatch(bootstrap, both, 2 * n, Shape(), Path(folder)),
            ),
            ("per_event", lambda: _child("per_event", bootstrap, both, 2 * n)),
            ("window_batch", lambda: _child("window_batch", bootstrap, both, 2 * n)),
            (
                "streamwatch_2_workers",
                lambda: _streamwatch(bootstrap, both, 2 * n, Shape(), Path(folder), workers=2),
            ),
            (
                "streamwatch_2_workers_repartition",
                lambda: _streamwatch(
                    bootstrap, both, 2 * n, Shape(), Path(folder), 2, "repartition"
                ),
            ),
        ]
        if args.only:
            plan = [(key, measure) for key, measure in plan if key in args.only.split(",")]
        for key, measure in plan:
            measured = []
            for k in range(runs):
                measured.append(measure())
                print(
                    f"  {key} run {k + 1}: {measured[-1]['events_per_s']:,.0f} events/s, "
                    f"{measured[-1]['cpu_s_per_million']:.1f} CPU s per 10^6",
                    flush=True,
                )
            results[key] = _median(measured)
        if args.only:
            return 0
        # half of the worker's rate with labels: a prediction and its label are 2 messages
        rate = results["streamwatch_labels"]["events_per_s"] / 4
        print(f"latency at {rate:,.0f} predictions/s ...", flush=True)
        results["streamwatch"].update(
            _latency(bootstrap, rate, args.latency_seconds, Shape(), Path(folder))
        )
        # the event order's wait is most of it: the same with a quarter of the default
        short = _latency(bootstrap, rate, args.latency_seconds, Shape(), Path(folder), SHORT)
        results["streamwatch"] |= {f"{k}_reorder_{SHORT}": v for k, v in short.items()}
        results["scaling"] = {}
        for shape in (Shape(12, 20), Shape(50, 20), Shape(200, 20), Shape(12, 200)):
            topic = f"scale-{shape.name}"
            _create(bootstrap, topic)
            scaled, _ = _dataset(args.scale_events, shape, seed=3)
            _produce(bootstrap, topic, scaled)
            del scaled
            measured = [
                _streamwatch(
                    bootstrap, (topic, "no-labels"), args.scale_events, shape, Path(folder)
                )
                for _ in range(runs)
            ]
            results["scaling"][shape.name] = _median(measured)
            rate = results["scaling"][shape.name]["events_per_s"]
            print(f"  scaling {shape.name}: {rate:,.0f} events/s", flush=True)
    versions = _versions()
    results["versions"] = versions
    results["command"] = command
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = _report(results, command, n, runs, versions)
    args.table.write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
