"""Soak: a worker on a real broker through adversarial traffic and two broker crashes.

    .venv/bin/python bench/soak/run.py [--events 1000000] [--out bench/soak/results.md]

Starts its own single-node broker, preloads ``--events`` predictions (12 features' worth of
shape: 2 numeric, 1 categorical), a label for each, and 1% adversarial messages mixed in
(every rejection reason a producer can cause, a flood of one-off model versions, oversized
messages, labels for predictions that never come), then runs ``streamwatch run`` on the
backlog. At a third and at two thirds of the way the broker is killed (SIGKILL) for 10 s and
started again on the same data. While it runs: the worker's RSS, and the time and size of a
``/metrics`` scrape, every 2 s. At the end: every count against what was produced.

It is a benchmark, not a test: it prints what it measured, and exits 1 if a count is off or
the worker died.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
import kafka_local  # noqa: E402  (stdlib-only script, imported by path)

from bench.produce import send_all  # noqa: E402

PARTITIONS = 4
EVERY = 100  # one adversarial message per this many predictions (1%)


def _events(n: int, t0_ms: int) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    rng = np.random.default_rng(1)
    amount = rng.normal(100, 15, n)
    age = rng.normal(40, 10, n)
    score = rng.uniform(0, 1, n)
    countries = np.array(["DE", "FR", "US", "IS", "BR"])[rng.integers(0, 5, n)]
    predictions, labels = [], []
    for i in range(n):
        key = f"p{i}".encode()
        t = t0_ms + i * 100
        predictions.append(
            (
                key,
                orjson.dumps(
                    {
                        "prediction_id": f"p{i}",
                        "model": "fraud",
                        "model_version": "v1",
                        "timestamp": t,
                        "features": {
                            "amount": float(amount[i]),
                            "age": float(age[i]),
                            "country": str(countries[i]),
                        },
                        "prediction": float(score[i]),
                        "attributes": {"country": str(countries[i])},
                    }
                ),
            )
        )
        labels.append(
            (
                key,
                orjson.dumps(
                    {
                        "prediction_id": f"p{i}",
                        "label": bool(score[i] > 0.5),
                        "timestamp": t + 60_000,
                    }
                ),
            )
        )
    return predictions, labels


def _adversarial(i: int, t_ms: int) -> tuple[str, str, bytes | None]:
    """(topic kind, expected outcome, value) of the i-th adversarial message."""
    base: dict[str, Any] = {
        "prediction_id": f"a{i}",
        "model": "fraud",
        "model_version": "v1",
        "timestamp": t_ms,
        "features": {"amount": 1.0, "age": 1.0, "country": "DE"},
        "prediction": 0.5,
    }
    kinds: list[tuple[str, str, Any]] = [
        ("p", "not_json", b"{oops"),
        ("p", "wrong_type", {**base, "features": {"amount": "12"}}),
        ("p", "future_timestamp", {**base, "timestamp": 253_402_300_799_000}),
        ("p", "late_timestamp", {**base, "timestamp": t_ms - 30 * 86_400_000}),
        ("p", "too_long", {**base, "features": {**base["features"], "country": "x" * 10_000}}),
        ("p", "too_many_fields", {**base, "attributes": {f"a{k}": 1 for k in range(300)}}),
        ("p", "empty", None),
        ("p", "version_flood", {**base, "model_version": f"junk-{i}"}),
        ("l", "unmatched", {"prediction_id": f"ghost-{i}", "label": 1, "timestamp": t_ms}),
        ("l", "missing_field", {"label": 1, "timestamp": t_ms}),
    ]
    topic, outcome, value = kinds[i % len(kinds)]
    if value is not None and not isinstance(value, bytes):
        value = orjson.dumps(value)
    return topic, outcome, value


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "message.max.bytes": 3_000_000,
        }
    )
    send_all(producer, topic, messages, 120)


def _metrics(port: int) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    took = time.perf_counter() - started
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return samples, took, len(text)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _count_letters(bootstrap: str, topic: str, expected: int) -> Counter[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"soak-{os.getpid()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    reasons: Counter[str] = Counter()
    deadline = time.monotonic() + 60
    quiet = 0
    while time.monotonic() < deadline and quiet < 5:
        batch = consumer.consume(1000, 1.0)
        quiet = 0 if batch else quiet + 1
        for m in batch:
            headers = dict(m.headers() or [])
            reason = headers["streamwatch.error.reason"]
            reasons[reason.decode() if isinstance(reason, bytes) else str(reason)] += 1
    consumer.close()
    return reasons


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="valid predictions")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/soak/results.md")
    args = parser.parse_args()
    n = args.events
    t0_ms = int((time.time() - 3 * 86400) * 1000)

    print(f"building {n:,} predictions, {n:,} labels and {n // EVERY:,} adversarial messages")
    predictions, labels = _events(n, t0_ms)
    expected: Counter[str] = Counter()
    adversarial_p: list[tuple[bytes | None, bytes | None]] = []
    adversarial_l: list[tuple[bytes | None, bytes | None]] = []
    for i in range(n // EVERY):
        topic, outcome, payload = _adversarial(i, t0_ms + (i * EVERY + 5000) * 100)
        expected[outcome] += 1
        (adversarial_p if topic == "p" else adversarial_l).append((b"adv", payload))
    oversized: list[tuple[bytes | None, bytes | None]] = [
        (b"big", b'{"pad": "' + b"x" * 1_500_000 + b'"}') for _ in range(5)
    ]
    expected["too_large"] += len(oversized)

    with tempfile.TemporaryDirectory() as folder, kafka_local.LocalKafka() as broker:
        bootstrap = broker.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": bootstrap})
        big = {"max.message.bytes": "3000000"}
        specs = [
            NewTopic("predictions", num_partitions=PARTITIONS, replication_factor=1, config=big),
            NewTopic("labels", num_partitions=PARTITIONS, replication_factor=1, config=big),
            NewTopic("dead-letters", num_partitions=1, replication_factor=1),
        ]
        for future in admin.create_topics(specs).values():
            future.result(timeout=30)
        # the adversarial messages are spread through the stream, after a warm-up
        mixed_p: list[tuple[bytes | None, bytes | None]] = [*predictions[:5000]]
        rest = predictions[5000:]
        step = max(1, len(rest) // max(1, len(adversarial_p)))
        for k, bad in enumerate(adversarial_p + oversized):
            mixed_p += rest[k * step : (k + 1) * step]
            mixed_p.append(bad)
        mixed_p += rest[(len(adversarial_p) + len(oversized)) * step :]
        print("producing ...", flush=True)
        _produce(bootstrap, "predictions", mixed_p)
        _produce(bootstrap, "labels", [*labels, *adversarial_l])
        valid_predictions = n + expected["version_flood"]
        invalid = {k: v for k, v in expected.items() if k not in ("version_flood", "unmatched")}

        port = kafka_local.free_port()
        config = {
            "kafka": {"bootstrap_servers": bootstrap, "group_id": "soak"},
            "topics": {
                "predictions": "predictions",
                "labels": "labels",
                "dead_letters": "dead-letters",
            },
            "models": [
                {
                    "name": "fraud",
                    "task": "binary",
                    "features": [
                        {"name": "amount", "type": "numeric"},
                        {"name": "age", "type": "numeric"},
                        {"name": "country", "type": "categorical"},
                    ],
                    "slices": [{"name": "country", "keys": ["country"]}],
                }
            ],
            "exporter": {"address": "127.0.0.1", "port": port},
        }
        path = Path(folder) / "soak.yaml"
        path.write_text(yaml.safe_dump(config))
        log = Path(folder) / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "streamwatch", "run", "--config", str(path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        samples: list[tuple[float, float, float, int, float]] = []  # t, rss, scrape s, bytes, done
        restarts: list[float] = []
        started = time.monotonic()
        total = valid_predictions + n + expected["unmatched"]  # every valid message
        done = 0.0
        stop = threading.Event()

        def restart_at(fraction: float) -> None:
            while not stop.is_set() and done < fraction * total:
                time.sleep(0.2)
            if stop.is_set():
                return
            restarts.append(time.monotonic() - started)
            print(f"  killing the broker at {done / total:.0%}", flush=True)
            broker.halt(kill=True)
            time.sleep(10)
            broker.start()
            print("  broker back", flush=True)

        def chaos() -> None:
            restart_at(1 / 3)
            restart_at(2 / 3)

        chaos_thread = threading.Thread(target=chaos, daemon=True)
        chaos_thread.start()
        final: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        try:
            while time.monotonic() - started < 1800:
                if worker.poll() is not None:
                    print(log.read_text()[-3000:])
                    print("the worker died")
                    return 1
                try:
                    final, took, size = _metrics(port)
                except OSError:
                    time.sleep(1)
                    continue
                done = sum(
                    v for (name, _), v in final.items() if name == "streamwatch_events_total"
                )
                now_rss = _rss_mib(worker.pid)
                samples.append((time.monotonic() - started, now_rss, took, size, done / total))
                print(
                    f"  {done / total:6.1%}  rss {now_rss:6.0f} MiB  scrape {took * 1000:5.0f} ms "
                    f"{size / 1024:6.0f} KiB",
                    flush=True,
                )
                invalid_seen = sum(
                    v
                    for (name, _), v in final.items()
                    if name == "streamwatch_events_invalid_total"
                )
                waiting = sum(
                    v for (name, _), v in final.items() if name == "streamwatch_events_waiting"
                )
                if (
                    done >= total
                    and not waiting  # none left in the event order
                    and invalid_seen >= sum(invalid.values())
                    and len(restarts) == 2
                ):
                    break
                time.sleep(2)
            stop.set()
            chaos_thread.join(timeout=60)
            time.sleep(3)
            final, _, _ = _metrics(port)
        finally:
            worker.terminate()
            worker.wait(timeout=60)

        def value(name: str, **labels: str) -> float:
            return final.get((name, tuple(sorted(labels.items()))), 0.0)

        got = {
            reason: sum(
                v
                for (name, lab), v in final.items()
                if name == "streamwatch_events_invalid_total" and dict(lab)["reason"] == reason
            )
            for reason in invalid
        }
        letters = _count_letters(bootstrap, "dead-letters", sum(invalid.values()))
        counted_p = value("streamwatch_events_total", topic="predictions", model="fraud")
        counted_l = value("streamwatch_events_total", topic="labels", model="")
        overflow = value("streamwatch_model_versions_overflow_total", model="fraud")
        unmatched = value("streamwatch_labels_unmatched_total")
        joined = sum(
            v for (name, _), v in final.items() if name == "streamwatch_labels_joined_total"
        )
        evicted = value("streamwatch_labels_early_evicted_total")
        held = value("streamwatch_labels_early_held")
        pending = value("streamwatch_predictions_pending", model="fraud")

    rss = [s[1] for s in samples]
    quarter = [min(samples, key=lambda s: abs(s[4] - q))[1] for q in (0.25, 0.5, 0.75, 1.0)]
    checks = [
        ("valid predictions counted", valid_predictions, counted_p),
        ("labels counted", n + expected["unmatched"], counted_l),
        *((f"rejected as {r}", expected[r], got[r]) for r in sorted(invalid)),
        *((f"dead letters with reason {r}", expected[r], letters[r]) for r in sorted(invalid)),
        (
            "predictions of one-off versions under __other__ (at least)",
            expected["version_flood"] - 10,
            overflow,
        ),
        # every label and every prediction accounted for exactly once
        (
            "labels: joined + unmatched + still held",
            n + expected["unmatched"],
            joined + unmatched + held,
        ),
        ("predictions: joined + still waiting for a label", valid_predictions, joined + pending),
    ]
    ok = all((g >= e) if "at least" in what else (g == e) for what, e, g in checks)
    lines = [
        "# Soak: adversarial traffic and two broker crashes",
        "",
        f"`.venv/bin/python bench/soak/run.py --events {n}`: {n:,} predictions with their "
        f"labels on {PARTITIONS} partitions, {sum(expected.values()):,} adversarial messages "
        f"(1%), the broker killed for 10 s at {restarts[0]:.0f} s and {restarts[1]:.0f} s "
        f"of the run; {samples[-1][0]:.0f} s in all.",
        "",
        "| check | expected | counted |",
        "| --- | ---: | ---: |",
        *(f"| {what} | {e:,.0f} | {g:,.0f} |" for what, e, g in checks),
        "",
        "| worker | value |",
        "| --- | ---: |",
        "| RSS at 25 / 50 / 75 / 100% of the stream (MiB) | "
        + " / ".join(f"{x:.0f}" for x in quarter)
        + " |",
        f"| peak RSS (MiB) | {max(rss):.0f} |",
        f"| labels joined; unmatched (of which released over the hold budget) | {joined:,.0f}; "
        f"{unmatched:,.0f} ({evicted:,.0f}) |",
        f"| at the end: predictions waiting for labels, labels held | {pending:,.0f}, {held:,.0f} |",  # noqa: E501
        f"| slowest `/metrics` scrape (ms) | {max(s[2] for s in samples) * 1000:.0f} |",
        f"| largest `/metrics` scrape (KiB) | {max(s[3] for s in samples) / 1024:.0f} |",
        f"| worker exits | 0 (SIGTERM at the end){'' if ok else '; COUNTS OFF'} |",
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
