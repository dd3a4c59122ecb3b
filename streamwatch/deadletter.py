"""Dead letters: every rejected message, with its original bytes, to the dead-letter topic.

The original key, value and headers are kept; these headers are added:

======================================  ==============================================
``streamwatch.error.reason``            one of :data:`streamwatch.decode.REASONS`
``streamwatch.error.detail``            a human-readable explanation
``streamwatch.source.topic``            where the message came from
``streamwatch.source.partition``        (decimal)
``streamwatch.source.offset``           (decimal)
======================================  ==============================================
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamwatch.decode import HeaderValue, Rejection


def dead_letter_headers(r: Rejection) -> list[tuple[str, HeaderValue]]:
    ours: list[tuple[str, HeaderValue]] = [
        ("streamwatch.error.reason", r.reason.encode()),
        ("streamwatch.error.detail", r.detail.encode("utf-8", "replace")),
        ("streamwatch.source.topic", r.topic.encode()),
        ("streamwatch.source.partition", str(r.partition).encode()),
        ("streamwatch.source.offset", str(r.offset).encode()),
    ]
    return [(k, v) for k, v in (r.headers or ()) if v is not None] + ours


class DeadLetters:
    """A producer for the dead-letter topic; :meth:`flush` fails loudly if anything was lost."""

    def __init__(self, topic: str, config: dict[str, Any]) -> None:
        self.topic = topic
        self._producer = Producer({**config, "enable.idempotence": True, "linger.ms": 20})
        self._failed: list[KafkaError] = []

    def send(self, rejection: Rejection) -> None:
        self._producer.produce(
            self.topic,
            value=rejection.value,
            key=rejection.key,
            headers=dead_letter_headers(rejection),
            on_delivery=self._delivered,
        )
        self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed.append(error)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every dead letter is acknowledged; raise if any was not.

        The worker commits input offsets only after this returns, so a dead letter is never
        lost behind a commit.
        """
        remaining = self._producer.flush(timeout)
        if remaining:
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, f"{remaining} dead letter(s) not delivered")
            )
        if self._failed:
            failed, self._failed = self._failed, []
            raise KafkaException(failed[0])
