"""The revoke callback keeps to one time budget and commits only what was acknowledged.

No broker is needed: the callback is called as librdkafka would call it, with tiny
subclasses in place of the dead-letter producer and the consumer's commit (a broker-backed
handover is in tests/integration/test_replay_live.py and test_worker.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import TopicPartition

from streamwatch.app import build
from streamwatch.config import parse_settings
from streamwatch.deadletter import DeadLetters
from streamwatch.source import Key
from streamwatch.worker import REVOKE_BUDGET_SECONDS, Worker

SETTINGS = parse_settings(
    {
        # nothing listens there: the clients are created, and their logs kept quiet
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "properties": {"log_level": 0}},
        "models": [{"name": "m", "task": "binary", "features": [{"name": "a", "type": "numeric"}]}],
    }
)


class Letters(DeadLetters):
    """Dead letters whose flush answers ``acknowledged`` and records its timeout."""

    def __init__(self, acknowledged: bool) -> None:
        super().__init__("dead", {"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
        self.acknowledged = acknowledged
        self.timeouts: list[float] = []

    def flush(self, timeout: float) -> bool:
        self.timeouts.append(timeout)
        return self.acknowledged


def _worker(acknowledged: bool) -> tuple[Worker, Letters, list[Any]]:
    app = build(SETTINGS)
    worker = app.worker()
    letters = Letters(acknowledged)
    worker.dead_letters = letters
    commits: list[Mapping[Key, int] | None] = []
    worker.source.commit = commits.append  # type: ignore[method-assign,assignment]
    # offsets stored for two partitions, as after a batch
    worker.loop._stored.update({("predictions", 0): 42, ("labels", 0): 7})
    return worker, letters, commits


def test_a_revoke_flushes_within_its_budget_then_commits_the_revoked_offsets() -> None:
    worker, letters, commits = _worker(acknowledged=True)
    worker._revoked([TopicPartition("predictions", 0)])
    assert letters.timeouts
    assert max(letters.timeouts) <= REVOKE_BUDGET_SECONDS
    assert commits == [{("predictions", 0): 42}]  # only the revoked partition's, explicitly
    assert ("predictions", 0) not in worker.loop.stored  # no longer ours


def test_a_revoke_whose_letters_are_not_acknowledged_commits_nothing() -> None:
    worker, letters, commits = _worker(acknowledged=False)
    worker._revoked([TopicPartition("predictions", 0), TopicPartition("labels", 0)])
    assert letters.timeouts
    assert max(letters.timeouts) <= REVOKE_BUDGET_SECONDS
    assert commits == []  # the next owner reads them again: at-least-once, never a gap
