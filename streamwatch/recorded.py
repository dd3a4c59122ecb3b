"""Recorded sources: finite streams read as a consumer reads partitions (the demo, replay).

A :class:`RecordedSource` reads one or more streams of messages: a JSONL file per topic
(replay, :func:`file_messages`), or the demo's one stream of both topics. Messages wait in a
buffer per partition, so a paused partition is not read while the others are: the one loop
(:mod:`streamwatch.loop`) reads the topics in step by event time here exactly as on Kafka. A
partition whose streams are exhausted and whose buffer is empty has *ended*: nothing more
can come, so the event order releases past it at once instead of after a wall-clock idle
time, and a replay's results do not depend on how fast it runs.

Examples:
    >>> from streamwatch.records import Record
    >>> stream = [Record("p", b"1", None, 0, 0), Record("l", b"2", None, 0, 0)]
    >>> source = RecordedSource(("p", "l"), [(stream, [("p", 0), ("l", 0)])])
    >>> source.pause([("l", 0)])
    >>> [m.value() for m in source.consume(10, 0.0)]
    [b'1']
    >>> source.resume()
    >>> [m.value() for m in source.consume(10, 0.0)], sorted(source.ended())
    ([b'2'], [('l', 0), ('p', 0)])
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from streamwatch.records import RawMessage, Record
from streamwatch.source import Key


def file_messages(path: Path, topic: str, progress: list[int] | None = None) -> Iterator[Record]:
    """A JSONL file's lines as the messages of partition 0 of ``topic``, offset = line
    number (blank lines skipped); ``progress[0]`` is kept at the bytes read so far."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if progress is not None:
                progress[0] += len(line)
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield Record(topic, line, None, 0, number)


class RecordedSource:
    """Finite streams, each yielding messages of the partitions listed with it."""

    def __init__(
        self,
        topics: tuple[str, str],
        streams: Sequence[tuple[Iterable[RawMessage], Sequence[Key]]],
    ) -> None:
        self.topics = topics
        self._streams = [(iter(messages), tuple(keys)) for messages, keys in streams]
        self._open = set(range(len(self._streams)))  # streams not exhausted
        self._buffers: dict[Key, deque[RawMessage]] = {
            key: deque() for _, keys in self._streams for key in keys
        }
        self._paused: set[Key] = set()

    @property
    def partitions(self) -> list[Key]:
        return list(self._buffers)

    def consume(self, max_messages: int, timeout: float) -> list[RawMessage]:
        """An equal share of ``max_messages`` from each partition not paused (the share of
        one that has less goes to the others), each in its order."""
        wanted = [key for key in self._buffers if key not in self._paused]
        for key in wanted:
            self._fill(key, max_messages // len(wanted))
        wanted.sort(key=lambda k: len(self._buffers[k]))  # the short ones first
        out: list[RawMessage] = []
        for i, key in enumerate(wanted):
            share = (max_messages - len(out)) // (len(wanted) - i)
            buffer = self._fill(key, share)
            for _ in range(min(share, len(buffer))):
                out.append(buffer.popleft())
        return out

    def _fill(self, key: Key, n: int) -> deque[RawMessage]:
        """Read the streams that feed ``key`` until it has ``n`` messages or they end
        (messages of other partitions read on the way wait in their buffers)."""
        buffer = self._buffers[key]
        for index in sorted(self._open):
            messages, keys = self._streams[index]
            if key not in keys:
                continue
            while len(buffer) < n:
                message = next(messages, None)
                if message is None:
                    self._open.discard(index)
                    break
                self._buffers[(message.topic() or "", message.partition() or 0)].append(message)
        return buffer

    def lag(self) -> dict[Key, int]:
        """What waits in each buffer, plus one while a stream that feeds it is open (its
        length is unknown until it ends)."""
        feeding = {key for index in self._open for key in self._streams[index][1]}
        return {key: len(b) + (key in feeding) for key, b in self._buffers.items()}

    def ended(self) -> set[Key]:
        return {key for key, lag in self.lag().items() if lag == 0}

    def pause(self, partitions: Iterable[Key] | None = None) -> None:
        self._paused |= set(self._buffers if partitions is None else partitions)

    def resume(self, partitions: Iterable[Key] | None = None) -> None:
        self._paused -= set(self._buffers if partitions is None else partitions)

    def store_offsets(self, offsets: Mapping[Key, int]) -> None:
        """Nothing to commit: a recorded stream is read once, from its start."""
