"""Stage 1 of repartition: every record goes to its model version's internal partition, a
label to its prediction's, and a label that comes first waits for it."""

from __future__ import annotations

from typing import Any

from streamwatch.config import parse_settings
from streamwatch.join import id_hash
from streamwatch.records import Label, Prediction, Record
from streamwatch.repartition import MARKER_HEADER, SOURCE_HEADER, Router, parse_source, route_of

P, L = "predictions", "labels"
SETTINGS = parse_settings(
    {
        "models": [{"name": "m", "task": "binary", "features": [{"name": "x", "type": "numeric"}]}],
        "labels": {"early_hold_seconds": 60, "ttl_seconds": 3600},
    }
)


def pred(i: int, version: str, t: float, partition: int = 0) -> Prediction:
    return Prediction(f"p{i}", "m", version, t, {}, 0.5, None, None, {}, partition, i)


def label(i: int, t: float, partition: int = 0, offset: int | None = None) -> Label:
    return Label(f"p{i}", 1.0, t, partition, i if offset is None else offset)


def raw(records: list[Any], topic: str) -> dict[tuple[str, int, int], Record]:
    return {
        (topic, r.partition, r.offset): Record(
            topic, r.prediction_id.encode(), None, r.partition, r.offset
        )
        for r in records
    }


def routed(router: Router, preds: list[Prediction], labels: list[Label]) -> list[tuple[int, str]]:
    messages = raw(preds, P) | raw(labels, L)
    return text(router.route(preds, labels, messages, P))


def test_a_version_has_one_internal_partition_and_every_worker_agrees() -> None:
    spread = {route_of("m", f"v{i}", 4) for i in range(40)}
    assert spread == {0, 1, 2, 3}
    assert route_of("m", "v7", 4) == route_of("m", "v7", 4)


def test_a_label_goes_where_its_prediction_went() -> None:
    router = Router(SETTINGS, 4, L)
    v1, v2 = route_of("m", "v1", 4), route_of("m", "v2", 4)
    out = routed(router, [pred(1, "v1", 10.0), pred(2, "v2", 11.0)], [])
    assert out == [(v1, "predictions:p1"), (v2, "predictions:p2")]
    assert routed(router, [], [label(2, 20.0), label(1, 21.0)]) == [
        (v2, "labels:p2"),
        (v1, "labels:p1"),
    ]


def test_a_label_that_comes_first_waits_for_its_prediction_and_holds_back_progress() -> None:
    router = Router(SETTINGS, 4, L)
    assert routed(router, [], [label(5, 30.0, offset=7)]) == []
    assert router.holding == 1
    assert router.earliest_held() == {0: 30.0}
    v3 = route_of("m", "v3", 4)
    assert routed(router, [pred(5, "v3", 25.0)], []) == [
        (v3, "predictions:p5"),
        (v3, "labels:p5"),
    ]
    assert router.holding == 0


def test_a_label_whose_prediction_never_comes_goes_on_to_be_counted_unmatched() -> None:
    router = Router(SETTINGS, 4, L)
    routed(router, [], [label(9, 100.0)])
    # its partition's predictions move past it by more than early_hold_seconds (60)
    out = routed(router, [pred(10, "v1", 200.0)], [])
    assert (id_hash("p9") % 4, "labels:p9") in out  # a partition chosen by its id
    assert router.holding == 0


def test_held_labels_go_on_when_their_partitions_predictions_stop() -> None:
    """A held label waits for its partition's predictions to move past it; if they stop
    (the end of a stream), it goes on after labels.early_hold_idle_seconds of wall clock."""
    router = Router(SETTINGS, 4, L)
    assert routed_at(router, [], [label(3, 50.0)], now=0.0) == []
    assert router.release(now=599.0) == []
    assert [m.value() for _, m in router.release(now=601.0)] == [b"p3"]
    assert router.holding == 0


def text(out: list[tuple[int, Any]]) -> list[tuple[int, str]]:
    return [(partition, f"{m.topic()}:{(m.value() or b'').decode()}") for partition, m in out]


def routed_at(
    router: Router, preds: list[Prediction], labels: list[Label], now: float
) -> list[tuple[int, Any]]:
    return router.route(preds, labels, raw(preds, P) | raw(labels, L), P, now)


def test_what_is_not_from_stage_1_is_a_reason_to_dead_letter_not_a_crash() -> None:
    topics, n = (P, L), 4
    ok = Record("e", b"{}", None, 0, 0, [(SOURCE_HEADER, b"predictions/3/42")])
    assert parse_source(ok, topics, n) == ((P, 3), None, 42)
    marker = Record(
        "e", b'{"topic": "labels", "partition": 1, "newest": 5.0, "idle": false}', None, 0, 1,
        [(MARKER_HEADER, b"1")],
    )  # fmt: skip
    assert parse_source(marker, topics, n) == ((L, 1), (5.0, False), 0)
    bad = [
        Record("e", b"{}", None, 0, 2),  # no header at all
        Record("e", b"{}", None, 0, 3, [(SOURCE_HEADER, b"predictions/x/1")]),
        Record("e", b"{}", None, 0, 4, [(SOURCE_HEADER, b"predictions/9/1")]),  # no such
        Record("e", b"{}", None, 0, 5, [(SOURCE_HEADER, b"other/0/1")]),
        Record("e", b"\xff", None, 0, 6, [(MARKER_HEADER, b"1")]),
        Record("e", b'{"topic": "labels"}', None, 0, 7, [(MARKER_HEADER, b"1")]),
    ]
    for message in bad:
        assert isinstance(parse_source(message, topics, n), str), message


def test_a_partitions_next_owner_restores_its_routes_and_held_labels_from_the_changelog() -> None:
    """Every change to stage 1's state goes to the changelog; a worker that is assigned the
    partition later, replaying it, routes its labels as the first would have."""
    first = Router(SETTINGS, 4, L)
    changelog: dict[int, dict[bytes, bytes | None]] = {}

    def write() -> None:
        for partition, key, value in first.take_changes():
            changelog.setdefault(partition, {})[key] = value  # compaction: the last wins

    routed(first, [pred(1, "v1", 10.0, 0), pred(2, "v2", 11.0, 1), pred(3, "v3", 12.0, 0)], [])
    routed(first, [], [label(1, 20.0, 0), label(4, 21.0, 0, offset=9)])  # 4: held
    write()
    first.revoke([0, 1])
    assert len(first.routes) == 0
    assert first.holding == 0

    second = Router(SETTINGS, 4, L)
    for partition, entries in changelog.items():
        second.restore(partition, {k: v for k, v in entries.items() if v is not None}, 0.0)
    assert second.holding == 1
    assert len(second.routes) == 2
    assert second.earliest_held() == {0: 21.0}
    v2, v3, v4 = (route_of("m", v, 4) for v in ("v2", "v3", "v4"))
    out = routed_at(second, [], [label(2, 22.0, 1), label(3, 23.0, 0)], now=1.0)
    assert text(out) == [(v2, "labels:p2"), (v3, "labels:p3")]
    # the held label follows its prediction, bytes and all
    out = routed_at(second, [pred(4, "v4", 15.0, 0)], [], now=2.0)
    assert text(out) == [(v4, "predictions:p4"), (v4, "labels:p4")]


def test_routes_past_the_ttl_leave_the_changelog_too() -> None:
    router = Router(SETTINGS, 4, L)
    routed(router, [pred(1, "v1", 10.0, 2)], [])
    router.take_changes()
    routed(router, [], [label(9, 10.0 + 3601.0, 2)])  # the TTL is 3,600 s of label time
    deleted = [(p, k) for p, k, v in router.take_changes() if v is None]
    assert (2, b"r" + id_hash("p1").to_bytes(8, "big")) in deleted


def test_a_changelog_entry_streamwatch_did_not_write_is_skipped_not_a_crash() -> None:
    router = Router(SETTINGS, 4, L)
    key = id_hash("p1").to_bytes(8, "big")
    router.restore(
        0,
        {b"r" + key: b"\x00", b"h" + key: b"not json", b"x" + key: b"?", b"r" + key[::-1]: b"1"},
        0.0,
    )
    assert len(router.routes) == 0
    assert router.holding == 0
