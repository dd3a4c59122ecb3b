"""The pending store against a plain dict, on random sequences of operations."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.join import PendingPredictions, id_hash

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.integers(0, 300), max_size=40)),
        st.tuples(st.just("take"), st.lists(st.integers(0, 300), max_size=40)),
        st.tuples(st.just("expire"), st.integers(0, 300)),
    ),
    max_size=60,
)


@given(operations, st.integers(1, 8))
def test_store_behaves_like_a_dict(ops: list[tuple[str, object]], capacity: int) -> None:
    store = PendingPredictions({"value": np.float32}, capacity=capacity, min_growth=1)
    model: dict[int, float] = {}  # id -> timestamp (the value column holds the id too)
    for op, arg in ops:
        if op == "add":
            ids = list(arg)  # type: ignore[call-overload]
            added = store.add_many(
                [id_hash(f"p{i}") for i in ids],
                np.array(ids, dtype=float),
                {"value": np.array(ids, dtype=np.float32)},
            )
            expected = []
            for i in ids:
                expected.append(i not in model)
                model.setdefault(i, float(i))
            assert added.tolist() == expected
        elif op == "take":
            ids = list(arg)  # type: ignore[call-overload]
            found, slots, times = store.take_many([id_hash(f"p{i}") for i in ids])
            expected = []
            for i in ids:
                expected.append(i in model)
                model.pop(i, None)
            assert found.tolist() == expected
            values = store.columns["value"][slots].tolist()
            assert values == [float(i) for i, f in zip(ids, expected, strict=True) if f]
            assert times.tolist() == values
        else:
            before = float(arg)  # type: ignore[arg-type]
            store.expire(before)
            model = {i: t for i, t in model.items() if t >= before}
        assert len(store) == len(model)
