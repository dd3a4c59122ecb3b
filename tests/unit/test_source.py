"""The revoke path's commit has a time budget: a coordinator that does not answer cannot
hold the rebalance for ever."""

from __future__ import annotations

import threading

from streamwatch.config import parse_settings
from streamwatch.source import Source


class Unanswered(Source):
    """A source whose synchronous commit waits for a coordinator that never answers."""

    released = threading.Event()

    def commit(self, wait: bool = False) -> None:
        self.released.wait(30)


def _source(cls: type[Source]) -> Source:
    model = {"name": "m", "task": "binary", "features": [{"name": "x", "type": "numeric"}]}
    settings = parse_settings({"models": [model]})
    return cls(settings, lambda _: None, lambda _: None, lambda _: None)


def test_a_revoke_commit_without_an_answer_gives_up_within_its_budget() -> None:
    source = _source(Unanswered)
    try:
        # False: it came back while the commit still waits (it would say True after it)
        assert source.commit_within(0.2) is False
        assert source.commit_error == "no answer to the revoke commit within 0.2s"
    finally:
        Unanswered.released.set()
        source.close()


def test_a_revoke_commit_that_answers_in_time_succeeds() -> None:
    class Answered(Source):
        def commit(self, wait: bool = False) -> None:
            self.commit_error = None

    source = _source(Answered)
    try:
        assert source.commit_within(5.0) is True
    finally:
        source.close()
