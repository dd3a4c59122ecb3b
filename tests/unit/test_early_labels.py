"""The early-label hold: indexed by time, bounded, released when predictions stop."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamwatch.config import parse_settings
from streamwatch.join import EarlyLabels
from streamwatch.quality import Quality
from streamwatch.records import Label, Prediction

T0 = 1_790_000_000.0


@given(
    st.lists(
        st.tuples(st.sampled_from(["hold", "pop", "expire", "evict"]), st.integers(0, 30)),
        max_size=120,
    )
)
def test_matches_a_plain_dict(ops: list[tuple[str, int]]) -> None:
    """Model-based: EarlyLabels behaves like a dict scanned in full at every expiry."""
    early, model = EarlyLabels(), {}
    clock = 0.0
    for op, k in ops:
        clock += 1
        if op == "hold" and k not in model:
            early.hold(k, Label(f"p{k}", 1.0, clock + k % 5, 0, k))
            model[k] = clock + k % 5
        elif op == "pop":
            assert (early.pop(k, f"p{k}") is None) == (model.pop(k, None) is None)
        elif op == "expire":
            limit = clock - 10 + k % 7
            stale = [key for key, t in model.items() if t < limit]
            for key in stale:
                del model[key]
            assert early.release_before(limit) == len(stale)
        elif op == "evict":
            n = k % 4
            oldest = sorted(model, key=lambda key: (model[key], key))[:n]
            assert early.release_oldest(n) == len(oldest)
            for key in oldest:
                del model[key]
        assert len(early) == len(model)
        assert set(early.labels) == set(model)


def _quality(**labels: float) -> Quality:
    settings = parse_settings(
        {
            "models": [
                {"name": "m", "task": "binary", "features": [{"name": "x", "type": "numeric"}]}
            ],
            "labels": labels,
        }
    )
    return Quality(settings)


def _label(i: int, partition: int = 0) -> Label:
    return Label(f"p{i}", 1.0, T0 + i, partition, i)


def test_the_hold_is_bounded_oldest_released_first() -> None:
    q = _quality(early_hold_max_labels=100)
    q.apply([], [_label(i, partition=i % 2) for i in range(250)])
    snap = q.snapshot()
    assert snap.early_held == 100
    assert snap.evicted_labels == 150 == snap.unmatched_labels
    # the newest were kept: their predictions still join
    q.apply([Prediction("p249", "m", "v", T0, {"x": 1.0}, 0.9, None, None, {}, 1, 0)], [])
    assert q.snapshot().joined == {("m", "v"): 1}


def test_a_partition_whose_predictions_stop_releases_its_labels() -> None:
    q = _quality(early_hold_idle_seconds=600)
    now = [0.0]
    q.clock = lambda: now[0]
    q.apply([Prediction("p0", "m", "v", T0, {"x": 1.0}, 0.9, None, None, {}, 0, 0)], [])
    q.apply([], [_label(i) for i in range(1, 50)])
    now[0] = 599.0
    q.apply([], [])
    assert q.snapshot().early_held == 49
    now[0] = 601.0
    q.apply([], [])
    snap = q.snapshot()
    assert snap.early_held == 0
    assert snap.unmatched_labels == 49
