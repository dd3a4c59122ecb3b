"""The recorded source: finite streams read as a consumer reads partitions."""

from __future__ import annotations

from streamwatch.recorded import RecordedSource
from streamwatch.records import Record

P, L = "predictions", "labels"


def _stream(topic: str, n: int) -> list[Record]:
    return [Record(topic, f"{topic}{i}".encode(), None, 0, i) for i in range(n)]


def test_a_batch_shares_its_size_between_the_partitions_read() -> None:
    source = RecordedSource((P, L), [(_stream(P, 10), [(P, 0)]), (_stream(L, 3), [(L, 0)])])
    batch = source.consume(8, 0.0)
    # 4 each, but labels have 3: the share left goes to predictions
    assert [m.topic() for m in batch].count(L) == 3
    assert [m.topic() for m in batch].count(P) == 5
    assert [m.offset() for m in batch if m.topic() == P] == [0, 1, 2, 3, 4]


def test_a_paused_partition_is_not_read_and_keeps_its_place() -> None:
    mixed = [m for pair in zip(_stream(P, 5), _stream(L, 5), strict=True) for m in pair]
    source = RecordedSource((P, L), [(mixed, [(P, 0), (L, 0)])])
    source.pause([(L, 0)])
    assert [m.offset() for m in source.consume(3, 0.0)] == [0, 1, 2]
    assert source.lag()[(L, 0)] >= 3  # read on the way, waiting in its buffer
    source.resume()
    rest = source.consume(100, 0.0)
    assert [m.offset() for m in rest if m.topic() == L] == [0, 1, 2, 3, 4]
    assert [m.offset() for m in rest if m.topic() == P] == [3, 4]


def test_a_partition_ends_when_its_stream_is_read_to_the_end() -> None:
    source = RecordedSource((P, L), [(_stream(P, 2), [(P, 0)]), (_stream(L, 4), [(L, 0)])])
    assert source.ended() == set()
    source.consume(4, 0.0)
    assert source.lag()[(P, 0)] >= 0
    source.consume(4, 0.0)
    assert (P, 0) in source.ended()
    source.consume(4, 0.0)
    assert source.ended() == {(P, 0), (L, 0)}
    assert source.consume(4, 0.0) == []
