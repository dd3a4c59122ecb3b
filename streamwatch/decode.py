"""Decode: Kafka message bytes to validated prediction and label records. The only parser.

Decoding is a pure function of ``(bytes, key, headers, topic, partition, offset)``. A message
that breaks the contract is not an exception: it becomes a :class:`Rejection` carrying its
coordinates and a reason from :data:`REASONS`, which the worker routes to the dead-letter
topic and counts.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

import orjson

from streamwatch.config import (
    ContractSettings,
    LabelFields,
    ModelSpec,
    PredictionFields,
    Settings,
)
from streamwatch.records import (
    Headers,
    Label,
    Prediction,
    Rejection,
)

#: Every reason a message can be rejected for (the ``reason`` label of
#: ``streamwatch_events_invalid_total`` and the dead-letter header).
REASONS = (
    "empty",  # no value (a tombstone)
    "too_large",  # over contract.max_message_bytes
    "invalid_utf8",
    "not_json",
    "non_finite",  # a number that overflows to +-Infinity (JSON has no NaN)
    "too_deep",  # nesting beyond the parser's depth limit
    "not_object",  # valid JSON, but not an object
    "missing_field",
    "wrong_type",
    "out_of_range",  # e.g. a binary probability outside [0, 1]
    "bad_timestamp",
    "unknown_model",  # a model the config does not list
    "too_long",  # a string past contract.max_string_chars
    "too_many_fields",  # features, attributes or class scores past contract.max_fields
)

_MISSING: Any = object()
_NUMERIC = frozenset({int, float, type(None)})
_CATEGORICAL = frozenset({str, int, bool, type(None)})
_SCALAR = frozenset({str, int, float, bool, type(None)})


def is_positive(label: Any, positive_labels: Collection[str]) -> bool:
    """The one rule for a binary label, used by the worker and by ``baseline``: a boolean is
    itself; a number, or a string that reads as one ("1", "1.0", "0"), is positive at 0.5 or
    more; any other string is positive when it is one of ``positive_labels``."""
    if isinstance(label, bool):
        return label
    if isinstance(label, int | float):
        return float(label) >= 0.5
    text = str(label)
    if text in positive_labels:
        return True
    try:
        return float(text) >= 0.5
    except ValueError:
        return False


class _Invalid(Exception):  # noqa: N818 - internal control flow, never escapes this module
    def __init__(self, reason: str, detail: str, where: tuple[str, str, str] | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.where = where  # (model, model_version, feature) of a feature's type error


Getter = Callable[[dict[str, Any], bytes | None, Headers], Any]


def compile_field(ref: str) -> Getter:
    """A getter for one contract field: a dotted JSON path, ``key`` or ``header:NAME``."""
    if ref == "key":
        return lambda doc, key, headers: _MISSING if key is None else _utf8(key, "key")
    if ref.startswith("header:"):
        name = ref.removeprefix("header:")

        def header(doc: dict[str, Any], key: bytes | None, headers: Headers) -> Any:
            for k, v in headers or ():
                if k == name and v is not None:
                    return v if isinstance(v, str) else _utf8(v, ref)
            return _MISSING

        return header
    parts = ref.split(".")
    if len(parts) == 1:
        return lambda doc, key, headers: doc.get(ref, _MISSING)

    def path(doc: dict[str, Any], key: bytes | None, headers: Headers) -> Any:
        node: Any = doc
        for part in parts:
            if not isinstance(node, dict):
                return _MISSING
            node = node.get(part, _MISSING)
        return node

    return path


def flat_row(doc: dict[str, Any], contract: ContractSettings) -> dict[str, Any] | None:
    """A contract-shaped prediction, with its label if it carries one, as a flat training
    row (features by name, ``prediction``, ``label``), through the ``contract:`` mapping;
    None when ``doc`` is not one (it has no features object). A multiclass
    ``{"class": c, "scores": ...}`` prediction becomes its class. For ``baseline``."""
    p = contract.predictions
    features = compile_field(p.features)(doc, None, None)
    if not isinstance(features, dict):
        return None
    prediction = compile_field(p.prediction)(doc, None, None)
    if isinstance(prediction, dict):
        prediction = prediction.get("class")
    label = compile_field(contract.labels.label)(doc, None, None)
    row = {**features, "prediction": None if prediction is _MISSING else prediction}
    row["label"] = None if label is _MISSING else label
    return row


def _utf8(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid("invalid_utf8", f"{where} is not valid UTF-8") from None


def parse_timestamp(value: Any) -> float:
    """Event time as epoch seconds, from an RFC 3339 string or epoch milliseconds."""
    if type(value) is int or type(value) is float:  # the common case, first
        return value / 1000.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000.0
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid("bad_timestamp", f"timestamp {value[:40]!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            raise _Invalid("bad_timestamp", f"timestamp {value[:40]!r} has no UTC offset")
        return parsed.timestamp()
    raise _Invalid("bad_timestamp", "timestamp must be an RFC 3339 string or epoch milliseconds")


def _depth(doc: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node)
    return deepest


def _load(value: bytes | None, limit: int, max_depth: int = 1024) -> dict[str, Any]:
    if value is None:
        raise _Invalid("empty", "message has no value")
    if len(value) > limit:
        raise _Invalid("too_large", f"{len(value)} bytes > limit {limit}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        text = str(error)
        if "UTF-8" in text:
            raise _Invalid("invalid_utf8", text) from None
        if "infinity" in text:
            raise _Invalid("non_finite", text) from None
        if "depth" in text or "recursion" in text.lower():
            raise _Invalid("too_deep", text) from None
        raise _Invalid("not_json", text) from None
    if not isinstance(doc, dict):
        raise _Invalid("not_object", f"JSON {type(doc).__name__}, expected an object")
    # The brackets bound the depth from above (in C); only a message with more of them
    # than the limit is walked.
    if value.count(b"{") + value.count(b"[") > max_depth and _depth(doc) > max_depth:
        raise _Invalid("too_deep", f"nesting deeper than contract.max_depth={max_depth}")
    return doc


def _required(
    getter: Getter, name: str, doc: dict[str, Any], key: bytes | None, headers: Headers
) -> Any:
    value = getter(doc, key, headers)
    if value is _MISSING or value is None:
        raise _Invalid("missing_field", f"{name} is missing")
    return value


def _string(value: Any, name: str, limit: int) -> str:
    if type(value) is str and 0 < len(value) <= limit:  # the common case, first
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise _Invalid("wrong_type", f"{name} must be a non-empty string")
    if len(value) > limit:
        raise _Invalid("too_long", f"{name} has {len(value)} characters > limit {limit}")
    return value


def _short(values: Any, name: str, limit: int) -> None:
    """Every string among ``values`` (scalars) is at most ``limit`` characters."""
    for v in values:
        if isinstance(v, str) and len(v) > limit:
            raise _Invalid("too_long", f"{name} has a string of {len(v)} characters > {limit}")


def _few(mapping: dict[str, Any], name: str, limit: int) -> None:
    if len(mapping) > limit:
        raise _Invalid("too_many_fields", f"{name} has {len(mapping)} entries > limit {limit}")


class Decoder:
    """Decodes both topics' messages against the contract in the settings."""

    def __init__(self, settings: Settings) -> None:
        contract = settings.contract
        self.max_bytes = contract.max_message_bytes
        self.max_chars = contract.max_string_chars
        self.max_fields = contract.max_fields
        self.max_depth = contract.max_depth
        p: PredictionFields = settings.contract.predictions
        lf: LabelFields = settings.contract.labels
        self._p = {name: compile_field(getattr(p, name)) for name in PredictionFields.model_fields}
        self._l = {name: compile_field(getattr(lf, name)) for name in LabelFields.model_fields}
        self.models: dict[str, ModelSpec] = {m.name: m for m in settings.models}
        self._numeric = {m.name: tuple(m.numeric_features) for m in settings.models}
        self._categorical = {m.name: tuple(m.categorical_features) for m in settings.models}

    def prediction(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        topic: str,
        partition: int,
        offset: int,
    ) -> Prediction | Rejection:
        try:
            return self._prediction(value, key, headers, partition, offset)
        except _Invalid as bad:
            return Rejection(
                topic,
                partition,
                offset,
                bad.reason,
                bad.detail,
                value,
                key,
                headers,
                *(bad.where or (None, None, None)),
            )

    def label(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        topic: str,
        partition: int,
        offset: int,
    ) -> Label | Rejection:
        try:
            doc = _load(value, self.max_bytes, self.max_depth)
            g = self._l
            prediction_id = _string(
                _required(g["prediction_id"], "prediction_id", doc, key, headers),
                "prediction_id",
                self.max_chars,
            )
            label = _required(g["label"], "label", doc, key, headers)
            if isinstance(label, (bool, int | float)):
                label = float(label)
            elif not isinstance(label, str):
                raise _Invalid("wrong_type", "label must be a number, boolean or string")
            _short((label,), "label", self.max_chars)
            ts = parse_timestamp(_required(g["timestamp"], "timestamp", doc, key, headers))
            return Label(prediction_id, label, ts, partition, offset)
        except _Invalid as bad:
            return Rejection(topic, partition, offset, bad.reason, bad.detail, value, key, headers)

    def _prediction(
        self, value: bytes | None, key: bytes | None, headers: Headers, partition: int, offset: int
    ) -> Prediction:
        doc = _load(value, self.max_bytes, self.max_depth)
        g = self._p
        chars = self.max_chars
        # Any length here: only the configured names are accepted.
        model = _string(
            _required(g["model"], "model", doc, key, headers), "model", len(value or "")
        )
        spec = self.models.get(model)
        if spec is None:
            raise _Invalid("unknown_model", f"model {model[:80]!r} is not in the config")
        prediction_id = _string(
            _required(g["prediction_id"], "prediction_id", doc, key, headers),
            "prediction_id",
            chars,
        )
        version = _string(
            _required(g["model_version"], "model_version", doc, key, headers),
            "model_version",
            chars,
        )
        ts = parse_timestamp(_required(g["timestamp"], "timestamp", doc, key, headers))
        features = _required(g["features"], "features", doc, key, headers)
        if not isinstance(features, dict):
            raise _Invalid("wrong_type", "features must be an object")
        _few(features, "features", self.max_fields)
        # One C-level pass per event over the configured names; the per-feature loop below
        # runs only for a message already known to be bad, to name the culprit.
        numeric = self._numeric[model]
        if not _NUMERIC.issuperset(map(type, map(features.get, numeric))):
            bad = next(n for n in numeric if type(features.get(n)) not in _NUMERIC)
            raise _Invalid(
                "wrong_type", f"feature {bad!r} must be a number or null", (model, version, bad)
            )
        categorical = self._categorical[model]
        if not _CATEGORICAL.issuperset(map(type, map(features.get, categorical))):
            bad = next(n for n in categorical if type(features.get(n)) not in _CATEGORICAL)
            raise _Invalid(
                "wrong_type",
                f"feature {bad!r} must be a string, integer or boolean",
                (model, version, bad),
            )
        _short(map(features.get, categorical), "a categorical feature", chars)
        raw = _required(g["prediction"], "prediction", doc, key, headers)
        prediction, scores = _prediction_value(spec.task, raw, chars, self.max_fields)
        predicted_label = g["predicted_label"](doc, key, headers)
        if predicted_label is _MISSING or predicted_label is None:
            predicted_label = None
        elif isinstance(predicted_label, str | int | bool):
            predicted_label = str(predicted_label)
            _short((predicted_label,), "predicted_label", chars)
        else:
            raise _Invalid("wrong_type", "predicted_label must be a string, integer or boolean")
        attributes = g["attributes"](doc, key, headers)
        if attributes is _MISSING or attributes is None:
            attributes = {}
        elif not isinstance(attributes, dict):
            raise _Invalid("wrong_type", "attributes must be an object")
        elif attributes:
            _few(attributes, "attributes", self.max_fields)
            if not _SCALAR.issuperset(map(type, attributes.values())):
                raise _Invalid("wrong_type", "attribute values must be strings, numbers or null")
            _short(attributes, "an attribute name", chars)
            _short(attributes.values(), "an attribute", chars)
        return Prediction(
            prediction_id,
            model,
            version,
            ts,
            features,
            prediction,
            scores,
            predicted_label,
            attributes,
            partition,
            offset,
        )


def _prediction_value(
    task: str, raw: Any, chars: int, fields: int
) -> tuple[float | str, dict[str, float] | None]:
    if task == "binary":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _Invalid("wrong_type", "binary prediction must be a probability (number)")
        if not 0.0 <= raw <= 1.0:
            raise _Invalid("out_of_range", f"binary prediction {raw} is outside [0, 1]")
        return float(raw), None
    if task == "regression":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _Invalid("wrong_type", "regression prediction must be a number")
        return float(raw), None
    # multiclass: a class, or {"class": c, "scores": {class: probability}}
    if isinstance(raw, dict):
        cls, scores = raw.get("class"), raw.get("scores")
        if scores is not None and not (
            isinstance(scores, dict)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in scores.values())
        ):
            raise _Invalid("wrong_type", "multiclass scores must map classes to numbers")
        if scores:
            _few(scores, "multiclass scores", fields)
            _short(scores, "a class of the scores", chars)
        if scores and not all(0.0 <= v <= 1.0 for v in scores.values()):
            raise _Invalid("out_of_range", "multiclass scores must be probabilities in [0, 1]")
        raw = cls
    else:
        scores = None
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise _Invalid("wrong_type", "multiclass prediction must be a class (string or integer)")
    _short((raw,), "the predicted class", chars)
    return str(raw), ({str(k): float(v) for k, v in scores.items()} if scores else None)
