"""The event order: records leave in (event time, id) order whatever the partitioning and
the interleaving of fetches; the engine behind it then gives the same alarms and scores from
1 or 4 partitions and any batch size."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwatch.app import build
from streamwatch.config import parse_settings
from streamwatch.ordering import EventOrder, order_key
from streamwatch.pipeline import Pipeline
from streamwatch.records import Label, Prediction
from streamwatch.simulation import DEMO_CONFIG, Scenario, spread

P, L = "predictions", "labels"


def pred(i: int, t: float, partition: int, offset: int = 0) -> Prediction:
    return Prediction(f"p{i:05d}", "m", "v1", t, {}, 0.5, None, None, {}, partition, offset)


def label(i: int, t: float, partition: int, offset: int = 0) -> Label:
    return Label(f"p{i:05d}", 1.0, t, partition, offset)


def order(reorder: float = 0.0, idle: float = 5.0, max_waiting: int = 10**6) -> EventOrder:
    return EventOrder(P, L, reorder, idle, max_waiting)


def _fetches(events: list[Prediction], partitions: int, rng: random.Random) -> list[list[Any]]:
    """Records spread over partitions (each in time order), read in random-size fetches of
    one partition at a time, as librdkafka hands them over."""
    queues: list[list[Prediction]] = [[] for _ in range(partitions)]
    for e in events:
        p = int(e.prediction_id[1:]) % partitions
        queues[p].append(pred(int(e.prediction_id[1:]), e.timestamp, p, len(queues[p])))
    fetches = []
    while any(queues):
        p = rng.choice([i for i, q in enumerate(queues) if q])
        n = rng.randint(1, 20)
        fetches.append(queues[p][:n])
        del queues[p][:n]
    return fetches


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.integers(0, 300), min_size=1, max_size=200),
    partitions=st.integers(1, 6),
    seed=st.integers(0, 2**32),
)
def test_the_release_order_does_not_depend_on_partitions_or_fetches(
    times: list[int], partitions: int, seed: int
) -> None:
    events = [pred(i, float(t), 0) for i, t in enumerate(sorted(times))]
    rng = random.Random(seed)
    o = order()
    o.assign([(P, p) for p in range(partitions)], now=0.0)
    released: list[Prediction] = []
    for fetch in _fetches(events, partitions, rng):
        o.add(fetch, [], now=0.0)
        released += o.release(now=1.0, lags={(P, p): 1 for p in range(partitions)})[0]
    released += o.flush()[0]
    assert [r.prediction_id for r in released] == [
        e.prediction_id for e in sorted(events, key=order_key)
    ]
    assert o.late[P] == 0
    assert o.waiting == 0


def test_nothing_leaves_before_every_partition_has_passed_it() -> None:
    o = order(reorder=1.0)
    o.assign([(P, 0), (P, 1)], now=0.0)
    o.add([pred(1, 10.0, 0), pred(2, 20.0, 0)], [], now=0.0)
    assert o.release(now=0.5, lags={(P, 1): 5}) == ([], [])  # partition 1: not heard yet
    o.add([pred(3, 15.0, 1)], [], now=0.5)
    released, _ = o.release(now=0.5, lags={(P, 1): 5})
    assert [r.prediction_id for r in released] == ["p00001"]  # below min(20, 15) - 1
    assert o.waiting == 2


def test_labels_wait_for_the_predictions_they_follow() -> None:
    o = order()
    o.add([pred(1, 10.0, 0)], [label(0, 50.0, 0), label(1, 5.0, 0)], now=0.0)
    o.add([pred(2, 60.0, 0)], [label(2, 70.0, 0)], now=0.0)
    predictions, labels = o.release(now=0.0)
    assert [r.timestamp for r in predictions] == [10.0]  # below 60, the newest prediction
    assert [r.timestamp for r in labels] == [5.0, 50.0]  # below 60 too, not 70


def test_a_silent_partition_with_nothing_to_read_stops_holding_the_others() -> None:
    o = order(idle=5.0)
    o.assign([(P, 0), (P, 1)], now=0.0)
    o.add([pred(1, 10.0, 0), pred(2, 20.0, 0)], [], now=2.0)
    assert o.release(now=4.9, lags={}) == ([], [])  # partition 1 may still send
    assert o.release(now=6.0, lags={(P, 1): 3}) == ([], [])  # it has messages left
    assert o.release(now=6.0, lags={}, paused=[(P, 1)]) == ([], [])  # paused: it has data
    assert [r.timestamp for r in o.release(now=6.0, lags={})[0]] == [10.0]
    # partition 0 itself goes silent: everything leaves
    assert [r.timestamp for r in o.release(now=7.5, lags={})[0]] == [20.0]


def test_stage_2_lanes_are_idle_only_when_reported_idle() -> None:
    """Repartition's stage 2 hears of a lane through progress reports, which come late
    under load: a lane not heard from for a while still holds the others back, until its
    stage 1 says it is idle; the order says which lane holds it."""
    o = EventOrder(P, L, 0.0, 1.0, 10**6, newest_from_records=False)
    o.assign([(P, 0), (P, 1)], now=0.0)
    o.progress((P, 0), 20.0, False, now=0.0)
    o.progress((P, 1), 5.0, False, now=0.0)
    o.add([pred(1, 10.0, 0)], [], now=0.0)
    assert o.release(now=100.0) == ([], [])  # lane 1 silent for 100 s: still waited for
    assert o.holding_back() == [((P, 1), 5.0)]
    o.progress((P, 1), None, True, now=100.0)
    assert [r.timestamp for r in o.release(now=100.0)[0]] == [10.0]


def test_a_record_more_out_of_order_than_allowed_is_applied_and_counted() -> None:
    o = order(reorder=1.0)
    o.add([pred(1, 10.0, 0), pred(2, 20.0, 0)], [], now=0.0)
    assert [r.timestamp for r in o.release(now=0.0)[0]] == [10.0]
    o.add([pred(3, 19.5, 0), pred(4, 12.0, 0)], [], now=0.0)
    released, _ = o.release(now=0.0)
    assert [r.timestamp for r in released] == [12.0]  # not dropped
    assert o.late[P] == 1  # 19 had been passed; 19.5 is within 1 s of 20 and waits
    assert [r.timestamp for r in o.flush()[0]] == [19.5, 20.0]


def test_offsets_are_committed_up_to_the_first_record_still_waiting() -> None:
    o = order()
    o.assign([(P, 0), (P, 1)], now=0.0)
    o.add([pred(i, float(i), 0, offset=i) for i in range(10)], [], now=0.0)
    o.add([pred(100, 4.5, 1, offset=7)], [], now=0.0)
    o.release(now=0.0, lags={(P, 0): 1, (P, 1): 1})  # up to 4.5: offsets 0..4 of partition 0
    assert o.next_offsets({(P, 0): 10, (P, 1): 8}) == {(P, 0): 5, (P, 1): 7}
    assert o.revoke([(P, 0)]) == 5  # left unapplied, for the next owner
    assert o.waiting == 1


def test_too_many_waiting_forces_the_oldest_out_and_counts_them() -> None:
    o = order(max_waiting=1000)
    o.assign([(P, 0), (P, 1)], now=0.0)  # partition 1 stalls
    o.add([pred(i, float(i), 0) for i in range(1500)], [], now=0.0)
    released, _ = o.release(now=0.0, lags={(P, 1): 1})
    assert [r.timestamp for r in released] == [float(i) for i in range(1000)]
    assert o.forced[P] == 1000
    assert o.waiting == 500


# -- the engine behind the order ------------------------------------------------------------


def _pipeline() -> Pipeline:
    config = dict(DEMO_CONFIG)
    return build(parse_settings(yaml.safe_load(yaml.safe_dump(config)))).pipeline


def _run(partitions: int, batch: int, seed: int) -> tuple[Any, ...]:
    """The demo's stream, its messages spread over ``partitions`` (by prediction id, as
    Kafka's key hash would), read in fetches of one partition at a time."""
    scenario = Scenario(events=8000, drift_at=4000, concept_at=5500, seed=3)
    queues = spread(scenario.records(), partitions)
    rng = random.Random(seed)
    pipeline = _pipeline()
    now = 0.0
    pipeline.order.assign(queues, now)  # as the worker's rebalance callback does
    alarms, concept = [], []
    while any(queues.values()):
        chosen = rng.choice([k for k, q in queues.items() if q])
        fetch = queues[chosen][:batch]
        del queues[chosen][:batch]
        lags = {k: len(q) for k, q in queues.items()}
        outcome = pipeline.process(fetch, None, now=now, lags=lags)
        alarms += outcome.alarms
        concept += outcome.concept_alarms
    outcome = pipeline.drain()
    alarms += outcome.alarms
    concept += outcome.concept_alarms
    quality = pipeline.quality.snapshot()
    drift = pipeline.monitor.snapshot()
    return (
        # within a batch, alarms come grouped by segment: the order is their event times
        sorted((a.event_time, a.slice, a.feature, a.detector) for a in alarms),
        sorted((c.event_time, c.slice, c.detector) for c in concept),
        sorted(quality.scores),
        sorted(drift.scores),
        set(pipeline.order.late.values()) | set(pipeline.order.forced.values()),
    )


def _values(rows: list[Any]) -> tuple[list[Any], list[float]]:
    return [row[:-1] for row in rows], [row[-1] for row in rows]


def test_the_same_events_give_the_same_alarms_and_scores_from_any_partition_count() -> None:
    one = _run(partitions=1, batch=500, seed=1)
    drift_alarms, concept_alarms, scores, drift_scores, disorder = one
    assert drift_alarms, "the stream drifts at event 4,000"
    assert concept_alarms, "a third of the labels in one country flip at event 5,500"
    assert disorder == {0}  # nothing out of order, nothing forced
    for partitions, batch, seed in ((1, 37, 2), (4, 500, 3), (4, 37, 4), (3, 1000, 5)):
        other = _run(partitions, batch, seed)
        assert other[:2] == one[:2], (partitions, batch)  # the alarms: exactly
        for mine, theirs in ((scores, other[2]), (drift_scores, other[3])):
            # the same counts; sums added in another grouping differ in the last bits
            assert _values(theirs)[0] == _values(mine)[0]
            assert _values(theirs)[1] == pytest.approx(_values(mine)[1], rel=1e-9, abs=1e-12)
