"""Preloading a benchmark's topics: every message sent and acknowledged, or an error."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Producer


def send_all(
    producer: Producer,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None]],
    timeout: float,
) -> None:
    """Produce (key, value) pairs, waiting whenever the local queue is full; then flush,
    failing unless every message was acknowledged within ``timeout`` seconds."""
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(timeout) == 0, f"not every message reached {topic}"
