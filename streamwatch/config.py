"""Configuration: one frozen settings model, read from YAML and overridden by the environment.

Environment variables win over the file: ``STREAMWATCH_`` prefix, ``__`` between nested
fields, e.g. ``STREAMWATCH_KAFKA__BOOTSTRAP_SERVERS=broker:9092``. Every problem is reported
at once by :func:`load_settings`, each with its field path and a hint for the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from streamwatch.errors import ConfigError, ConfigProblem

_SECRET_KEY = re.compile(r"(password|secret|\.pem$|\.key$|token)", re.IGNORECASE)
_FIX = " | fix: "  # separates a validator's message from its hint


def _problem(message: str, fix: str) -> ValueError:
    return ValueError(f"{message}{_FIX}{fix}")


def _unique(items: list[Any], what: str) -> list[Any]:
    """The items, if their names are unique; else a problem naming the duplicates."""
    names = [item.name for item in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _problem(f"duplicate {what} names {dupes}", f"give each {what} one entry")
    return items


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_field_ref(ref: str) -> str:
    """A contract field lives at a dotted JSON path, in the message key, or in a header."""
    if ref == "key" or (ref.startswith("header:") and len(ref) > len("header:")):
        return ref
    if not ref or any(not part for part in ref.split(".")):
        raise _problem(
            f"{ref!r} is not a field reference",
            "use a dotted path into the JSON payload (e.g. meta.model), 'key', or 'header:NAME'",
        )
    return ref


class PredictionFields(_Section):
    """Where each field of the prediction contract is found in the user's messages."""

    prediction_id: str = "prediction_id"
    model: str = "model"
    model_version: str = "model_version"
    timestamp: str = "timestamp"
    features: str = "features"
    prediction: str = "prediction"
    predicted_label: str = "predicted_label"
    attributes: str = "attributes"

    @field_validator("*")
    @classmethod
    def _refs(cls, ref: str) -> str:
        return _check_field_ref(ref)


class LabelFields(_Section):
    """Where each field of the label contract is found in the user's messages."""

    prediction_id: str = "prediction_id"
    label: str = "label"
    timestamp: str = "timestamp"

    @field_validator("*")
    @classmethod
    def _refs(cls, ref: str) -> str:
        return _check_field_ref(ref)


class ContractSettings(_Section):
    """The event contract: where its fields are, and the limits on every input dimension.

    A message past a limit is dead-lettered with the limit's own reason, so that no single
    message can make the statistics cost more than O(events) memory per batch."""

    predictions: PredictionFields = PredictionFields()
    labels: LabelFields = LabelFields()
    max_message_bytes: int = Field(default=1_048_576, gt=0)
    # Ids, model versions, categories, classes, labels, attribute keys and values.
    max_string_chars: int = Field(default=256, ge=8, le=1_000_000)
    # Entries of the features object, of the attributes object, of multiclass scores.
    max_fields: int = Field(default=256, ge=1, le=100_000)
    # Nesting of the whole JSON message (orjson itself stops at 1024).
    max_depth: int = Field(default=32, ge=2, le=1024)


class EventTimeSettings(_Section):
    """What event time a record may carry, so that one event cannot poison event-time state.

    Future: against the wall clock (a data-derived anchor could be ratcheted forward by a
    producer). Past: against the partition's watermark, the newest event time accepted on
    that topic partition. Records outside either bound are dead-lettered
    (``future_timestamp``, ``late_timestamp``), never clamped."""

    max_future_seconds: float = Field(default=3600, gt=0)
    max_lateness_seconds: float = Field(default=7 * 86400, gt=0)
    # Read the two topics in step: a partition further ahead than this (event time) of its
    # co-partition on the other topic waits while that one has messages left; null: never.
    align_seconds: float | None = Field(default=10, ge=0)
    # The engine sees records in one order, whatever the partitioning (streamwatch/ordering):
    # a record waits until every owned partition has read past its event time by this much
    # (the disorder tolerated within a partition), ...
    reorder_seconds: float = Field(default=1, ge=0)
    # ... a partition with nothing left to read and silent this long (wall clock) holds
    # nobody back, ...
    idle_seconds: float = Field(default=5, gt=0)
    # ... and past this many records waiting (a stalled partition), the oldest go anyway.
    max_waiting_events: int = Field(default=50_000, ge=1000)


class KafkaSettings(_Section):
    bootstrap_servers: str = "localhost:9092"
    group_id: str = "streamwatch"
    # At start: how long to wait for the cluster's metadata before giving up (exit 2).
    connect_timeout_seconds: float = Field(default=10, gt=0, le=600)
    # Any librdkafka property, dotted keys as librdkafka spells them (security.protocol,
    # sasl.username, ssl.ca.location, ...). Values of sensitive keys become SecretStr.
    properties: dict[str, str | int | float | bool | SecretStr] = {}

    @field_validator("properties", mode="before")
    @classmethod
    def _hide_secrets(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            k: SecretStr(str(v))
            if _SECRET_KEY.search(str(k)) and not isinstance(v, SecretStr)
            else v
            for k, v in value.items()
        }

    @field_validator("properties")
    @classmethod
    def _not_ours(cls, properties: dict[str, Any]) -> dict[str, Any]:
        """Properties the guarantees rest on are streamwatch's, not the passthrough's: the
        commits (at-least-once), the group (kafka.group_id) and the range assignor, which
        gives a worker partition p of both topics (the label join needs it)."""
        owned = {
            "enable.auto.commit": "streamwatch commits after the dead letters are flushed",
            "enable.auto.offset.store": "streamwatch stores offsets after a batch is applied",
            "group.id": "set kafka.group_id instead",
        }
        for key, why in owned.items():
            if key in properties:
                raise _problem(f"{key} cannot be set here", f"remove it: {why}")
        strategy = properties.get("partition.assignment.strategy")
        if strategy is not None and str(strategy) != "range":
            raise _problem(
                f"partition.assignment.strategy={strategy} would split a prediction from its "
                "label (the join needs partition p of both topics on one worker)",
                "remove it: streamwatch uses the range assignor",
            )
        return properties

    def librdkafka(self) -> dict[str, Any]:
        """The passthrough properties as librdkafka wants them (secrets revealed)."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        for key, value in self.properties.items():
            config[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return config


class TopicSettings(_Section):
    predictions: str = "predictions"
    labels: str = "labels"
    dead_letters: str = "streamwatch-dead-letters"

    @field_validator("predictions", "labels", "dead_letters")
    @classmethod
    def _legal_topic(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", name):
            raise _problem(
                f"{name!r} is not a legal Kafka topic name",
                "use 1-249 characters from letters, digits, '.', '_' and '-'",
            )
        return name


class FeatureSpec(_Section):
    name: str = Field(min_length=1)
    type: Literal["numeric", "categorical"]


class ReferenceSpec(_Section):
    # Without a profile for a version, its reference is its first N events.
    warmup_events: int = Field(default=10_000, ge=10)
    # Profiles from `streamwatch baseline`, one per model version (matched by their lineage).
    profiles: list[Path] = []

    @field_validator("profiles")
    @classmethod
    def _readable(cls, paths: list[Path]) -> list[Path]:
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise _problem(
                f"no such profile file(s): {missing}",
                "build one with `streamwatch baseline`, or fix the path",
            )
        return paths


class SliceSpec(_Section):
    """A slice: events grouped by the values of one or more keys (attributes or features).

    A key is looked up in the event's ``attributes``, then in its ``features``. Numeric keys
    listed in ``edges`` are bucketed (``[10,100)``); at most ``max_values`` values are tracked
    per slice, the rest share ``__other__``.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    keys: list[str] = Field(min_length=1)
    edges: dict[str, list[float]] = {}
    max_values: int = Field(default=50, ge=1, le=10_000)
    # Also watch feature and prediction drift per tracked value (each against its own
    # first `reference.warmup_events` events); the version's budget is shared with them.
    drift: bool = False

    @model_validator(mode="after")
    def _drift_values_bounded(self) -> SliceSpec:
        if self.drift and self.max_values > 100:
            raise _problem(
                f"drift per slice value keeps a reference and detectors for each of "
                f"max_values={self.max_values} values",
                "set max_values to 100 or less for a slice with drift: true",
            )
        return self

    @model_validator(mode="after")
    def _edges_name_keys(self) -> SliceSpec:
        unknown = sorted(set(self.edges) - set(self.keys))
        if unknown:
            raise _problem(
                f"edges for {unknown}, which are not among keys {self.keys}",
                "add them to keys, or remove their edges",
            )
        for key, edges in self.edges.items():
            if sorted(edges) != edges or len(set(edges)) != len(edges):
                raise _problem(
                    f"edges of {key!r} are not strictly increasing",
                    "list the bucket edges in increasing order",
                )
        return self


class ModelSpec(_Section):
    name: str = Field(min_length=1)
    task: Literal["binary", "multiclass", "regression"]
    features: list[FeatureSpec] = Field(min_length=1)
    reference: ReferenceSpec = ReferenceSpec()
    slices: list[SliceSpec] = []
    # Binary models: label values that mean the positive class (numbers >= 0.5 also do).
    positive_labels: list[str] = ["1", "true", "True", "yes", "positive"]
    # Multiclass models: the classes whose probabilities the predictions carry
    # ({"class": c, "scores": {class: p}}); enables log loss, Brier, ROC AUC, ECE and the
    # estimate before labels. Each pending prediction keeps 4 bytes per class.
    classes: list[str] = Field(default=[], max_length=100)
    # Model versions tracked at once (the most active); the rest count under __other__.
    max_versions: int = Field(default=10, ge=1, le=1000)
    # Quality objectives, e.g. {accuracy: 0.95}: exported as streamwatch_quality_objective,
    # which the shipped alert rules compare scores and error budgets with.
    objectives: dict[Literal["accuracy", "precision", "recall", "f1", "roc_auc"], float] = {}

    @field_validator("objectives")
    @classmethod
    def _targets_are_ratios(cls, objectives: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, v in objectives.items() if not 0 < v < 1)
        if bad:
            raise _problem(
                f"objectives {bad} must lie strictly between 0 and 1",
                "give the target score, e.g. {accuracy: 0.95}",
            )
        return objectives

    @model_validator(mode="after")
    def _classes_for_multiclass(self) -> ModelSpec:
        if self.classes and self.task != "multiclass":
            raise _problem(
                f"classes are for multiclass models; {self.name!r} is {self.task}",
                "remove classes, or set task: multiclass",
            )
        if self.classes and (len(self.classes) < 2 or len(set(self.classes)) != len(self.classes)):
            raise _problem(
                f"classes {self.classes} must be at least two distinct names",
                "list each class once, e.g. [billing, shipping, other]",
            )
        return self

    @field_validator("slices", "features")
    @classmethod
    def _unique_names(cls, items: list[Any], info: ValidationInfo) -> list[Any]:
        return _unique(items, (info.field_name or "").removesuffix("s"))

    @property
    def numeric_features(self) -> list[str]:
        return [f.name for f in self.features if f.type == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.type == "categorical"]


class WindowSpec(_Section):
    """A window of the last N events (per partition) or of N seconds of event time: the last
    N seconds (sliding), or back-to-back spans of N seconds (tumbling; quality only)."""

    events: int | None = Field(default=None, ge=10)
    seconds: float | None = Field(default=None, ge=1)
    tumbling: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> WindowSpec:
        if (self.events is None) == (self.seconds is None):
            raise _problem(
                "a window needs exactly one of `events` and `seconds`",
                "write {events: 2000} or {seconds: 3600}",
            )
        if self.tumbling and self.seconds is None:
            raise _problem(
                "only a window of `seconds` can tumble",
                "write {seconds: 3600, tumbling: true}, or drop tumbling",
            )
        return self

    @property
    def name(self) -> str:
        if self.events is not None:
            return f"events_{self.events}"
        seconds = int(self.seconds or 0)
        prefix = "tumbling_" if self.tumbling else ""
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{prefix}{seconds // size}{unit}"
        return f"{prefix}{seconds}s"


class DriftSettings(_Section):
    # Expected events between false alarms, per model version, all its signals together.
    false_alarm_budget_events: float = Field(default=1e6, ge=100)
    # The CUSUM designs: the mean shifts (in standard deviations) and spread ratios the
    # charts are tuned to; one chart pair per design (a single number: one design).
    mean_shift_sigmas: list[float] = Field(default=[0.35, 0.7, 1.4], min_length=1, max_length=6)
    scale_ratio: list[float] = Field(default=[1.35, 1.7], min_length=1, max_length=6)

    @field_validator("mean_shift_sigmas", "scale_ratio", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) else value

    @field_validator("mean_shift_sigmas")
    @classmethod
    def _shifts(cls, value: list[float]) -> list[float]:
        if not all(0 < v <= 5 for v in value):
            raise ValueError("every mean shift must be above 0 and at most 5 sigmas")
        return sorted(set(value))

    @field_validator("scale_ratio")
    @classmethod
    def _ratios(cls, value: list[float]) -> list[float]:
        if not all(1 < v <= 10 for v in value):
            raise ValueError("every scale ratio must be above 1 and at most 10")
        return sorted(set(value))

    # The test of categorical signals: cusum (a Bernoulli CUSUM bank per category, per
    # event), or chi2 (a chi-square test per categorical_test_events events).
    categorical_detector: Literal["cusum", "chi2"] = "cusum"
    categorical_test_events: int = Field(default=1000, ge=50)
    # The detector of numeric signals: cusum, or one of river's (adwin, page_hinkley, kswin).
    detector: Literal["cusum", "adwin", "page_hinkley", "kswin"] = "cusum"
    # Per-signal overrides, by feature name or "prediction".
    detectors: dict[str, Literal["cusum", "adwin", "page_hinkley", "kswin"]] = {}
    bins: int = Field(default=20, ge=2, le=200)
    windows: list[WindowSpec] = Field(
        default_factory=lambda: [
            WindowSpec(events=2000),
            WindowSpec(seconds=3600),
            WindowSpec(seconds=86400),
        ],
        min_length=1,
    )
    # Below this many events a window has no statistics (they would be noise).
    min_window_events: int = Field(default=200, ge=10)

    @field_validator("windows")
    @classmethod
    def _count_window_first(cls, windows: list[WindowSpec]) -> list[WindowSpec]:
        if windows[0].events is None:
            raise _problem(
                "the first window must count events (data quality reads it)",
                "put an {events: N} window first",
            )
        if any(w.tumbling for w in windows):
            raise _problem(
                "drift windows slide; tumbling windows are for quality scores",
                "drop `tumbling` from drift.windows",
            )
        return _distinct_windows(windows)


def _distinct_windows(windows: list[WindowSpec]) -> list[WindowSpec]:
    names = [w.name for w in windows]
    if len(set(names)) != len(names):
        raise _problem(f"duplicate windows {names}", "list each window once")
    return windows


class LabelSettings(_Section):
    # How long a prediction waits for its label (label event time), and a label for its
    # prediction (prediction event time).
    ttl_seconds: float = Field(default=7 * 86400, gt=0)
    early_hold_seconds: float = Field(default=600, ge=0)
    # Labels held for a prediction not seen yet, per worker; past it the oldest are released
    # (counted as unmatched). About 280 bytes each.
    early_hold_max_labels: int = Field(default=500_000, ge=1)
    # Wall-clock seconds without a new prediction on a partition after which its held labels
    # are released (its prediction watermark no longer moves).
    early_hold_idle_seconds: float = Field(default=600, gt=0)


class QualitySettings(_Section):
    windows: list[WindowSpec] = Field(
        default_factory=lambda: [
            WindowSpec(events=1000),
            WindowSpec(seconds=3600, tumbling=True),
            WindowSpec(seconds=86400, tumbling=True),
        ],
        min_length=1,
    )
    # Below this many labelled events a window has no scores.
    min_window_events: int = Field(default=50, ge=1)

    @field_validator("windows")
    @classmethod
    def _distinct(cls, windows: list[WindowSpec]) -> list[WindowSpec]:
        return _distinct_windows(windows)

    # Binary models: a prediction is positive at or above this probability.
    threshold: float = Field(default=0.5, gt=0, lt=1)
    # The test on each model version's (and tracked slice's) error stream: a bank of
    # Bernoulli CUSUMs under the budget below (docs/quality.md), or one of river's detectors
    # at river's own settings (outside the budget).
    concept_detector: Literal["cusum", "ddm", "eddm", "hddm_a", "hddm_w", "adwin"] = "cusum"
    # cusum: expected labelled predictions between false alarms for one model version, its
    # slices included.
    false_alarm_budget_labels: float = Field(default=1e6, ge=100)
    # cusum: each version's and slice value's first labels, which give its reference error rate.
    reference_labels: int = Field(default=2000, ge=100)
    # cusum: a reference read from the stream grows with its own later labels, one block
    # behind them and while they look like it, up to this many (docs/quality.md). Set it to
    # reference_labels to keep the first labels only.
    reference_labels_max: int = Field(default=50_000, ge=100)
    # Regression, on the absolute error: cusum (a Bernoulli CUSUM bank on errors above the
    # reference's 80th percentile, under the budget above) or river's adwin, page_hinkley.
    regression_detector: Literal["cusum", "adwin", "page_hinkley"] = "cusum"

    @model_validator(mode="after")
    def _reference_can_grow(self) -> QualitySettings:
        if self.reference_labels_max < self.reference_labels:
            raise _problem(
                f"reference_labels_max={self.reference_labels_max} is below "
                f"reference_labels={self.reference_labels}",
                f"set reference_labels_max to {self.reference_labels} or more "
                f"({self.reference_labels} keeps the first labels only)",
            )
        return self


class GateSettings(_Section):
    """The rule `streamwatch gate` applies to a candidate model version (docs/deploy.md)."""

    # Prometheus range of the checks, when --window is not given.
    window: str = Field(default="30m", pattern=r"^[0-9]+[smhd]$")
    # Evidence: fewer candidate predictions than this in the window is "wait".
    min_events: int = Field(default=1000, ge=1)
    # Labelled predictions needed to judge quality on labels; below it, on the estimate.
    min_labels: int = Field(default=200, ge=1)
    # Share of the candidate's predictions labelled in the window; below it is "wait".
    min_label_coverage: float = Field(default=0.0, ge=0, le=1)
    # Drift alarms of the candidate (any signal, any slice) allowed in the window.
    max_drift_alarms: int = Field(default=0, ge=0)
    # Rejected share of the predictions topic allowed in the window.
    max_invalid_ratio: float = Field(default=0.01, ge=0, le=1)
    # How much worse than the baseline (or reference, or objective) the score may be.
    max_score_drop: float = Field(default=0.02, ge=0)
    # The score judged; by default accuracy (binary, multiclass) or mae (regression).
    score: Literal["accuracy", "log_loss", "brier", "mae"] | None = None


class WorkerSettings(_Section):
    batch_size: int = Field(default=10_000, ge=1, le=100_000)
    poll_timeout_seconds: float = Field(default=0.5, gt=0, le=10)
    commit_interval_seconds: float = Field(default=1.0, ge=0)
    stall_seconds: float = Field(default=60.0, gt=0)
    # SIGTERM: the time to flush dead letters and commit before exiting 0 anyway (what was
    # not committed is logged; it is re-read on restart). Fit it in the orchestrator's
    # grace period (Kubernetes: 30 s).
    shutdown_grace_seconds: float = Field(default=20.0, gt=0, le=600)


class EngineSettings(_Section):
    """Where a model version's detectors and windows live (docs/architecture.md).

    ``local``: in each worker, fed by the partitions it owns; exact with one worker.
    ``repartition``: every worker decodes, admits and routes its partitions' records to an
    internal topic keyed by model version; the one owner of a version's internal partition
    keeps all of its state, so results do not depend on how many workers there are."""

    mode: Literal["local", "repartition"] = "local"
    # the internal topic, created at start with the predictions topic's partition count;
    # null: "<kafka.group_id>-engine"
    topic: str | None = None
    # how long the internal topic keeps records: a version's new owner (after a rebalance)
    # rebuilds its state from what is kept
    retention_hours: float = Field(default=168, gt=0)

    @field_validator("topic")
    @classmethod
    def _legal_topic(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", name):
            raise _problem(
                f"{name!r} is not a legal Kafka topic name",
                "use 1-249 characters from letters, digits, '.', '_' and '-'",
            )
        return name


class ExporterSettings(_Section):
    # Loopback by default; in a container, set 0.0.0.0 so Prometheus can reach the pod.
    address: str = "127.0.0.1"
    port: int = Field(default=9308, ge=0, le=65535)
    # Prometheus' exporter web configuration (TLS, basic auth with bcrypt hashes), as in
    # node_exporter's --web.config.file.
    web_config_file: Path | None = None
    # A connection that sends nothing for this long is closed; at most this many at once.
    idle_timeout_seconds: float = Field(default=10, gt=0, le=600)
    max_connections: int = Field(default=32, ge=1, le=1024)
    # A model version without predictions or labels for this long (in its model's event
    # time) is forgotten: its series leave /metrics and its state is freed.
    retire_after_seconds: float = Field(default=86400, gt=0)


class TLSServerConfig(_Section):
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: Literal["NoClientCert", "RequireAndVerifyClientCert"] = "NoClientCert"


class WebConfig(_Section):
    """The exporter's web configuration file, in Prometheus' exporter-toolkit format
    (``tls_server_config``, ``basic_auth_users`` with bcrypt hashes). Relative paths are
    relative to the file's folder, as in exporter-toolkit."""

    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, SecretStr] = {}
    http_server_config: dict[str, Any] = {}  # accepted for compatibility, not used

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        bad = [u for u, h in users.items() if not h.get_secret_value().startswith("$2")]
        if bad:
            raise _problem(
                f"basic_auth_users {bad} do not hold bcrypt hashes",
                "store a bcrypt hash, e.g. from `htpasswd -nBC 10 USER`",
            )
        return users


def load_web_config(path: Path) -> WebConfig:
    """Read an exporter web configuration; paths in it become absolute."""
    source = str(path)
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(
            source, [ConfigProblem("(top level)", "not a YAML mapping", "see docs/exporter.md")]
        )
    try:
        config = WebConfig(**data)
    except ValidationError as error:
        raise ConfigError(source, _problems(error)) from None
    tls = config.tls_server_config
    if tls is None:
        return config
    base = path.parent
    files = {
        name: value if value is None or value.is_absolute() else base / value
        for name, value in (
            ("cert_file", tls.cert_file),
            ("key_file", tls.key_file),
            ("client_ca_file", tls.client_ca_file),
        )
    }
    missing = [f"tls_server_config.{n}" for n, f in files.items() if f and not f.is_file()]
    if missing:
        raise ConfigError(
            source,
            [ConfigProblem(n, "no such file", "give the path of a PEM file") for n in missing],
        )
    return config.model_copy(update={"tls_server_config": tls.model_copy(update=files)})


class Settings(BaseSettings):
    """The whole configuration of a worker."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMWATCH_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    contract: ContractSettings = ContractSettings()
    models: list[ModelSpec] = Field(min_length=1)
    drift: DriftSettings = DriftSettings()
    labels: LabelSettings = LabelSettings()
    event_time: EventTimeSettings = EventTimeSettings()
    quality: QualitySettings = QualitySettings()
    worker: WorkerSettings = WorkerSettings()
    engine: EngineSettings = EngineSettings()
    exporter: ExporterSettings = ExporterSettings()
    gate: GateSettings = GateSettings()

    @field_validator("models")
    @classmethod
    def _unique_models(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        return _unique(models, "model")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (which arrives as init kwargs).
        return env_settings, init_settings

    @model_validator(mode="after")
    def _web_config_readable(self) -> Settings:
        path = self.exporter.web_config_file
        if path is not None:
            try:
                load_web_config(path)
            except ConfigError as error:
                problems = "; ".join(f"{p.path}: {p.message}" for p in error.problems)
                raise _problem(
                    f"exporter.web_config_file {str(path)!r}: {problems}",
                    "see docs/exporter.md for the format",
                ) from None
        return self

    @model_validator(mode="after")
    def _detectors_name_signals(self) -> Settings:
        problems = []
        for name, detector in self.drift.detectors.items():
            kinds = {f.type for m in self.models for f in m.features if f.name == name}
            kinds |= {
                "categorical" if m.task == "multiclass" else "numeric"
                for m in self.models
                if name == "prediction"
            }
            if not kinds:
                problems.append(f"drift.detectors names {name!r}, which no model has")
            elif detector != "cusum" and "categorical" in kinds:
                problems.append(
                    f"drift.detectors: {name!r} is categorical; {detector} needs "
                    "numbers (categorical signals use chi-square tests)"
                )
        if problems:
            raise _problem(
                "; ".join(problems), 'name a numeric feature of a model, or "prediction"'
            )
        return self

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


_HINTS = {
    "missing": "add this field",
    "extra_forbidden": "remove it, or check its spelling against docs/configuration.md",
    "int_parsing": "use a whole number",
    "int_from_float": "use a whole number",
    "float_parsing": "use a number",
    "bool_parsing": "use true or false",
    "string_type": "use a string",
    "list_type": "use a YAML list",
    "dict_type": "use a YAML mapping",
    "model_type": "use a YAML mapping",
    "too_short": "add at least one entry",
}


def _problems(error: ValidationError) -> list[ConfigProblem]:
    problems = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        message, _, hint = message.partition(_FIX)
        if not hint:
            hint = _HINTS.get(item["type"], "")
            if item["type"].endswith(("_than", "_than_equal")):
                hint = "change the value to fit the bound"
            if item["type"] == "literal_error":
                hint = "use one of the values listed"
        problems.append(ConfigProblem(path, message, hint))
    return problems


def parse_settings(data: Any, source: str = "<config>") -> Settings:
    """Validate a mapping (e.g. parsed YAML), or raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    "(top level)", "not a YAML mapping", "start from docs/configuration.md"
                )
            ],
        )
    try:
        return Settings(**data)
    except ValidationError as error:
        raise ConfigError(source, _problems(error)) from None
    except SettingsError as error:  # an environment override that is not valid JSON
        raise ConfigError(source, [_environment_problem(error)]) from None


def _environment_problem(error: SettingsError) -> ConfigProblem:
    """Name the variable, never its value (it may hold a secret)."""
    match = re.search(r'field "([^"]+)"', str(error))
    field = match.group(1) if match else "?"
    return ConfigProblem(
        f"STREAMWATCH_{field.upper()}",
        f"the environment override of {field!r} is not valid JSON",
        f"set STREAMWATCH_{field.upper()} to a JSON object, or override single fields as "
        f"STREAMWATCH_{field.upper()}__FIELD=value",
    )


def _read_yaml(path: str | os.PathLike[str]) -> Any:
    """Parse a YAML file; errors name the line and column and never echo a secret."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    "(file)", error.strerror or str(error), "pass the path of a readable YAML file"
                )
            ],
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(source, [_yaml_problem(error, text)]) from None


def _yaml_problem(error: yaml.YAMLError, text: str) -> ConfigProblem:
    """PyYAML's own message quotes the offending lines, which may hold a password: rebuild
    it from the problem and its position, quoting a line only when no secret could be on
    it (no secret-like key on it or on the line before)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or type(error).__name__
    context = getattr(error, "context", None)
    message = f"not valid YAML: {problem}" + (f" ({context})" if context else "")
    if mark is None:
        return ConfigProblem("(file)", message, "fix the YAML syntax")
    lines = text.splitlines()
    nearby = lines[max(0, mark.line - 1) : mark.line + 1]
    if mark.line < len(lines) and not any(_SECRET_KEY.search(line) for line in nearby):
        message += f": {lines[mark.line].strip()[:120]!r}"
    return ConfigProblem(
        f"line {mark.line + 1}, column {mark.column + 1}", message, "fix the YAML syntax"
    )


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read, override from the environment and validate a YAML config file."""
    return parse_settings(_read_yaml(path), str(path))
