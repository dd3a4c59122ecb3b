from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamwatch.admission import ADMISSION_REASONS
from streamwatch.config import parse_settings
from streamwatch.decode import REASONS, Decoder, parse_timestamp
from streamwatch.records import Label, Prediction, Rejection

MODELS = [
    {
        "name": "fraud",
        "task": "binary",
        "features": [
            {"name": "amount", "type": "numeric"},
            {"name": "country", "type": "categorical"},
        ],
    },
    {"name": "intent", "task": "multiclass", "features": [{"name": "len", "type": "numeric"}]},
    {"name": "eta", "task": "regression", "features": [{"name": "km", "type": "numeric"}]},
]
LIMITS = {"max_message_bytes": 4096, "max_string_chars": 64, "max_fields": 16, "max_depth": 8}
DECODER = Decoder(parse_settings({"models": MODELS, "contract": LIMITS}))


def event(**changes: Any) -> dict[str, Any]:
    base = {
        "prediction_id": "p1",
        "model": "fraud",
        "model_version": "v3",
        "timestamp": "2026-11-27T10:00:00+01:00",
        "features": {"amount": 12.5, "country": "DE"},
        "prediction": 0.25,
    }
    return {**base, **changes}


def decode(
    value: bytes | None,
    key: bytes | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> Prediction | Rejection:
    return DECODER.prediction(value, key, headers, "predictions", 3, 17)


def reason(value: bytes | None) -> str:
    record = decode(value)
    assert isinstance(record, Rejection), record
    assert record.reason in REASONS
    assert (record.topic, record.partition, record.offset) == ("predictions", 3, 17)
    assert record.value == value
    return record.reason


def test_valid_binary_prediction() -> None:
    record = decode(orjson.dumps(event(attributes={"country": "DE"}, predicted_label=True)))
    assert isinstance(record, Prediction)
    assert record.timestamp == 1_795_770_000.0  # 09:00 UTC
    assert record.prediction == 0.25
    assert record.predicted_label == "True"
    assert record.attributes == {"country": "DE"}
    assert (record.partition, record.offset) == (3, 17)


def test_epoch_milliseconds_and_rfc3339_agree() -> None:
    assert parse_timestamp(1_795_770_000_000) == parse_timestamp("2026-11-27T09:00:00Z")


def test_multiclass_and_regression_predictions() -> None:
    multi = decode(
        orjson.dumps(
            event(
                model="intent",
                features={"len": 3},
                prediction={"class": "refund", "scores": {"refund": 0.7, "other": 0.3}},
            )
        )
    )
    assert isinstance(multi, Prediction)
    assert multi.prediction == "refund"
    assert multi.scores == {"refund": 0.7, "other": 0.3}
    plain = decode(orjson.dumps(event(model="intent", features={"len": 3}, prediction=4)))
    assert isinstance(plain, Prediction)
    assert plain.prediction == "4"
    eta = decode(orjson.dumps(event(model="eta", features={"km": 2}, prediction=-3.5)))
    assert isinstance(eta, Prediction)
    assert eta.prediction == -3.5


def test_missing_features_are_allowed_as_missing_values() -> None:
    record = decode(orjson.dumps(event(features={"amount": None})))
    assert isinstance(record, Prediction)


def _nested(depth: int) -> Any:
    node: Any = 1
    for _ in range(depth - 1):
        node = [node]
    return node


CASES: list[tuple[bytes | None, str]] = [
    (None, "empty"),
    (b"x" * 5000, "too_large"),
    (b'{"a": "\xc3\x28"}', "invalid_utf8"),
    (b"{", "not_json"),
    (b'{"a": -1e999}', "non_finite"),
    (b"[" * 1100 + b"]" * 1100, "too_deep"),
    (b'"a string"', "not_object"),
    (orjson.dumps({k: v for k, v in event().items() if k != "features"}), "missing_field"),
    (orjson.dumps(event(model_version=None)), "missing_field"),
    (orjson.dumps(event(features={"amount": "12.5"})), "wrong_type"),
    (orjson.dumps(event(features={"amount": True})), "wrong_type"),
    (orjson.dumps(event(features={"country": {"nested": 1}})), "wrong_type"),
    (orjson.dumps(event(features=[1, 2])), "wrong_type"),
    (orjson.dumps(event(prediction="high")), "wrong_type"),
    (orjson.dumps(event(prediction=1.01)), "out_of_range"),
    (orjson.dumps(event(timestamp="2026-11-27 10:00")), "bad_timestamp"),
    (orjson.dumps(event(timestamp="tomorrow")), "bad_timestamp"),
    (orjson.dumps(event(timestamp=[1])), "bad_timestamp"),
    (orjson.dumps(event(model="other")), "unknown_model"),
    (orjson.dumps(event(attributes=[1])), "wrong_type"),
    (orjson.dumps(event(attributes={"deep": {"a": 1}})), "wrong_type"),
    (orjson.dumps(event(extra=_nested(LIMITS["max_depth"] + 1))), "too_deep"),
    (orjson.dumps(event(prediction_id="p" * 65)), "too_long"),
    (orjson.dumps(event(model_version="v" * 65)), "too_long"),
    (orjson.dumps(event(features={"amount": 1.0, "country": "c" * 65})), "too_long"),
    (orjson.dumps(event(attributes={"country": "c" * 65})), "too_long"),
    (orjson.dumps(event(attributes={"k" * 65: "DE"})), "too_long"),
    (orjson.dumps(event(features={f"f{i}": 1 for i in range(17)})), "too_many_fields"),
    (orjson.dumps(event(attributes={f"a{i}": 1 for i in range(17)})), "too_many_fields"),
]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_each_contract_violation_has_its_reason(value: bytes | None, expected: str) -> None:
    assert reason(value) == expected


def test_every_reason_is_reachable() -> None:
    # The cases above cover the decoder's reasons exactly: a new reason needs a case. The
    # event-time reasons come from admission, which has its own tests.
    assert {expected for _, expected in CASES} == set(REASONS) - set(ADMISSION_REASONS)


def test_a_payload_shaped_differently_is_mapped_by_the_config() -> None:
    settings = parse_settings(
        {
            "models": MODELS,
            "contract": {
                "predictions": {
                    "prediction_id": "key",
                    "model": "header:x-model",
                    "model_version": "meta.version",
                    "timestamp": "meta.ts",
                    "features": "inputs",
                    "prediction": "output.p_fraud",
                    "attributes": "meta.segment",
                }
            },
        }
    )
    theirs = {
        "meta": {"version": 7, "ts": 1_795_770_000_000, "segment": {"device": "ios"}},
        "inputs": {"amount": 3, "country": "FR"},
        "output": {"p_fraud": 0.9},
    }
    record = Decoder(settings).prediction(
        orjson.dumps(theirs), b"id-42", [("x-model", b"fraud")], "t", 0, 0
    )
    assert isinstance(record, Prediction)
    assert (record.prediction_id, record.model, record.model_version) == ("id-42", "fraud", "7")
    assert record.prediction == 0.9
    assert record.attributes == {"device": "ios"}
    missing_header = Decoder(settings).prediction(orjson.dumps(theirs), b"id", None, "t", 0, 0)
    assert isinstance(missing_header, Rejection)
    assert missing_header.reason == "missing_field"


def test_labels() -> None:
    ok = DECODER.label(
        b'{"prediction_id": "p1", "label": true, "timestamp": 1000}', None, None, "labels", 0, 5
    )
    assert ok == Label("p1", 1.0, 1.0, 0, 5)
    bad = DECODER.label(
        b'{"prediction_id": "p1", "label": [1], "timestamp": 1000}', None, None, "labels", 0, 6
    )
    assert isinstance(bad, Rejection)
    assert bad.reason == "wrong_type"


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    assert isinstance(decode(value), Prediction | Rejection)
    assert isinstance(DECODER.label(value, value, None, "l", 0, 0), Label | Rejection)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from([*list(event()), "extra"]), json_values, max_size=8))
def test_arbitrary_json_objects_are_either_valid_or_rejected(doc: dict[str, Any]) -> None:
    record = decode(orjson.dumps({**event(), **doc}))
    if isinstance(record, Prediction):
        assert record.model == "fraud"
        assert 0.0 <= float(record.prediction) <= 1.0
    else:
        assert record.reason in REASONS


@given(
    amount=st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**6), 10**6)
    | st.none(),
    score=st.floats(0.0, 1.0),
    country=st.text(min_size=1, max_size=5),
    ms=st.integers(0, 4_000_000_000_000),
)
def test_valid_events_round_trip(amount: float | None, score: float, country: str, ms: int) -> None:
    doc = event(features={"amount": amount, "country": country}, prediction=score, timestamp=ms)
    record = decode(orjson.dumps(doc))
    assert isinstance(record, Prediction)
    assert record.features == {"amount": amount, "country": country}
    assert record.prediction == score
    assert record.timestamp == ms / 1000.0


def within_limits(record: Prediction | Label) -> None:
    """No decoded record escapes the contract's limits."""
    chars, fields = LIMITS["max_string_chars"], LIMITS["max_fields"]
    assert len(record.prediction_id) <= chars
    if isinstance(record, Label):
        assert not isinstance(record.label, str) or len(record.label) <= chars
        return
    assert len(record.model_version) <= chars
    assert len(record.features) <= fields
    assert len(record.attributes) <= fields
    strings = [v for v in record.attributes.values() if isinstance(v, str)]
    strings += [*record.attributes, *(record.scores or {})]
    strings += [v for k, v in record.features.items() if k == "country" and isinstance(v, str)]
    strings += [s for s in (record.predicted_label, record.prediction) if isinstance(s, str)]
    assert all(len(s) <= chars for s in strings)
    assert all(
        v is None or isinstance(v, str | int | float | bool) for v in record.attributes.values()
    )


contract_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=20)
        | st.dictionaries(st.text(max_size=80), children, max_size=20)
    ),
    max_leaves=60,
)
FIELDS = [
    "prediction_id",
    "model",
    "model_version",
    "timestamp",
    "features",
    "prediction",
    "predicted_label",
    "attributes",
    "label",
    "scores",
    "class",
]


@given(st.binary(max_size=5000))
def test_fuzz_arbitrary_bytes_never_raise(value: bytes) -> None:
    for record in (decode(value), DECODER.label(value, None, None, "labels", 0, 1)):
        if isinstance(record, Rejection):
            assert record.reason in REASONS
        else:
            within_limits(record)


@given(
    st.dictionaries(st.sampled_from(FIELDS), contract_values, max_size=11),
    st.sampled_from(["fraud", "intent", "eta"]),
)
def test_fuzz_arbitrary_json_against_the_contract(doc: dict[str, Any], model: str) -> None:
    """Arbitrary JSON in every contract field: a valid record within every limit, or a
    rejection with a known reason; never an exception."""
    value = orjson.dumps({**event(model=model), **doc})
    for record in (decode(value), DECODER.label(value, None, None, "labels", 0, 1)):
        if isinstance(record, Rejection):
            assert record.reason in REASONS
        else:
            within_limits(record)


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-5, 5))
def test_a_number_and_its_text_are_the_same_label(number: float) -> None:
    """One rule for the worker and `baseline`: "1.0" is positive in both (it was not)."""
    from streamwatch.decode import is_positive

    positives = ["1", "true", "yes"]
    assert is_positive(number, positives) == is_positive(str(number), positives)
    assert is_positive(number, positives) == (number >= 0.5)


def test_label_strings_and_booleans() -> None:
    from streamwatch.decode import is_positive

    positives = ["fraud", "1"]
    assert is_positive("fraud", positives)
    assert not is_positive("legit", positives)
    assert is_positive("1.0", positives)
    assert not is_positive("0.0", positives)
    assert is_positive(True, positives)
    assert not is_positive(False, positives)
