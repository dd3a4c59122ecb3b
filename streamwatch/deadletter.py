"""Dead letters: every rejected message, with its original bytes, to the dead-letter topic.

The original key, value and headers are kept; these headers are added:

======================================  ==============================================
``streamwatch.error.reason``            one of :data:`streamwatch.decode.REASONS` or
                                        :data:`streamwatch.admission.ADMISSION_REASONS`
``streamwatch.error.detail``            a human-readable explanation
``streamwatch.source.topic``            where the message came from
``streamwatch.source.partition``        (decimal)
``streamwatch.source.offset``           (decimal)
``streamwatch.error.payload_omitted``   only when the original would not fit the topic:
                                        ``true``; key, value and original headers are
                                        then left out, and these two describe them:
``streamwatch.error.payload_bytes``     the original key + value + headers size
``streamwatch.error.payload_sha256``    SHA-256 of the original value (hex)
======================================  ==============================================

No dead letter can stop the worker:

- one that would not fit the topic (its ``max.message.bytes``, read at start, or the
  producer's ``message.max.bytes``) goes out without its payload, as above;
- one the broker does not acknowledge (an outage longer than librdkafka's own retries) is
  produced again; until every dead letter is acknowledged the worker commits nothing and
  stops consuming (:meth:`DeadLetters.flush` reports it), and it resumes by itself.
"""

from __future__ import annotations

import hashlib
import logging
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from streamwatch.records import HeaderValue, Rejection

log = logging.getLogger(__name__)

#: Room kept for the record's own framing and our headers beside the original payload.
OVERHEAD_BYTES = 4096
PRODUCER_LIMIT = 1_000_000  # librdkafka's default message.max.bytes


def dead_letter_headers(r: Rejection) -> list[tuple[str, HeaderValue]]:
    return [(k, v) for k, v in (r.headers or ()) if v is not None] + _ours(r)


def _ours(r: Rejection) -> list[tuple[str, HeaderValue]]:
    return [
        ("streamwatch.error.reason", r.reason.encode()),
        ("streamwatch.error.detail", r.detail.encode("utf-8", "replace")[:1024]),
        ("streamwatch.source.topic", r.topic.encode()),
        ("streamwatch.source.partition", str(r.partition).encode()),
        ("streamwatch.source.offset", str(r.offset).encode()),
    ]


def payload_bytes(r: Rejection) -> int:
    """What the original message adds to a dead letter: key, value and header bytes."""
    headers = sum(len(k) + len(v or b"") for k, v in r.headers or ())
    return len(r.value or b"") + len(r.key or b"") + headers


def _omitted(r: Rejection) -> tuple[None, None, list[tuple[str, HeaderValue]]]:
    digest = hashlib.sha256(r.value or b"").hexdigest()
    return (
        None,
        None,
        [
            *_ours(r),
            ("streamwatch.error.payload_omitted", b"true"),
            ("streamwatch.error.payload_bytes", str(payload_bytes(r)).encode()),
            ("streamwatch.error.payload_sha256", digest.encode()),
        ],
    )


class DeadLetters:
    """A producer for the dead-letter topic that retries until every letter is acknowledged."""

    def __init__(self, topic: str, config: dict[str, Any]) -> None:
        self.topic = topic
        self._config = config
        self._producer = Producer({**config, "enable.idempotence": True, "linger.ms": 20})
        limit = int(config.get("message.max.bytes", PRODUCER_LIMIT))
        self.max_payload = limit - OVERHEAD_BYTES
        self._unacked = 0
        self._retry: list[tuple[Rejection, bool]] = []  # (letter, without its payload)
        self._omitted = 0  # acknowledged without their payload, since the last take
        self.last_error: str | None = None

    def check(self, timeout: float) -> None:
        """Fit the payload limit to the topic's ``max.message.bytes`` (best effort)."""
        admin = AdminClient(self._config)
        resource = ConfigResource(ConfigResource.Type.TOPIC, self.topic)
        try:
            configs = admin.describe_configs([resource])[resource].result(timeout=timeout)
        except KafkaException as error:
            log.warning("could not read %s's max.message.bytes: %s", self.topic, error)
            return
        entry = configs.get("max.message.bytes")
        if entry is not None and entry.value:
            self.max_payload = min(self.max_payload, int(entry.value) - OVERHEAD_BYTES)

    @property
    def pending(self) -> int:
        """Dead letters not acknowledged yet (in flight or waiting to be produced again)."""
        return self._unacked + len(self._retry)

    def send(self, rejection: Rejection, omit: bool = False) -> None:
        omit = omit or payload_bytes(rejection) > self.max_payload
        while True:
            if omit:
                value, key, headers = _omitted(rejection)
            else:
                value, key, headers = rejection.value, rejection.key, dead_letter_headers(rejection)
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    headers=headers,
                    on_delivery=partial(self._delivered, rejection, omit),
                )
                self._unacked += 1
                break
            except BufferError:  # the local queue is full: serve deliveries, then retry
                self._producer.poll(0.1)
            except KafkaException as error:
                self.last_error = str(error)
                if omit:  # refused even without a payload: kept for the next flush
                    self._retry.append((rejection, omit))
                    break
                omit = True  # e.g. too large for a limit we could not read
        self._producer.poll(0)

    def _delivered(
        self, rejection: Rejection, omitted: bool, error: KafkaError | None, message: Message
    ) -> None:
        self._unacked -= 1
        if error is None:
            self._omitted += omitted
            return
        self.last_error = str(error)
        # Not lost: produced again at the next flush (without its payload if it was too big).
        too_large = error.code() == KafkaError.MSG_SIZE_TOO_LARGE
        self._retry.append((rejection, omitted or too_large))

    def take_omitted(self) -> int:
        """How many letters went out without their payload since the last call."""
        omitted, self._omitted = self._omitted, 0
        return omitted

    def flush(self, timeout: float) -> bool:
        """Produce the letters that failed again, and wait up to ``timeout`` seconds for
        every letter to be acknowledged. True when none is outstanding: only then may the
        input offsets be committed."""
        retry, self._retry = self._retry, []
        for rejection, omit in retry:
            self.send(rejection, omit)
        self._producer.flush(timeout)
        return self.pending == 0
