"""Reference profiles: what "normal" looks like for one model version, with its lineage.

A profile is built from a sample: a model version's first ``warmup_events`` events, or
training/validation data through ``streamwatch baseline``. It is saved as versioned JSON::

    {"format": "streamwatch.reference", "format_version": 1,
     "lineage": {"model", "model_version", "run_id", "data_snapshot", "code_revision",
                 "created_at", "rows", "source"},
     "signals": {"feature:amount": {...numeric...}, "prediction:prediction": {...}, ...}}

Per numeric signal: quantile bin edges and counts, mean, variance, min, max, missing rate,
and a quantile grid for the normal-scores transform (:func:`NumericReference.normal_scores`)
that the sequential detectors use. Per categorical signal: the most frequent categories
with their counts, an overflow count and the missing rate.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import special

from streamwatch.statistics import FloatArray, IntArray

FORMAT = "streamwatch.reference"
FORMAT_VERSION = 1
CALIBRATION_BINS = 20
GRID_SIZE = 1000  # quantiles kept for the normal-scores transform
MAX_CATEGORIES = 100  # categories kept per categorical signal; the rest count as "other"

SignalKind = Literal["feature", "prediction"]


@dataclass(frozen=True)
class Signal:
    """One monitored series of a model: a feature, or the model's prediction."""

    signal: SignalKind
    name: str
    type: Literal["numeric", "categorical"]

    @property
    def key(self) -> str:
        return f"{self.signal}:{self.name}"


@dataclass(frozen=True)
class Lineage:
    """Where a model version and its reference come from: the five questions a team must
    answer (what code ran, which data fed it, which features, what environment built it,
    what metrics justified it), plus the profile's own provenance."""

    model: str
    model_version: str
    run_id: str = ""
    data_snapshot: str = ""  # which data: a snapshot id, or the profiled file's SHA-256
    code_revision: str = ""  # what code: the training code's revision
    created_at: str = ""
    rows: int = 0
    source: str = "warmup"  # "warmup", or the file the profile was built from
    features: list[str] = field(default_factory=list)  # which features the model used
    # what environment: an image digest, or the Python and package versions of the build
    environment: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # training/validation scores

    @property
    def environment_id(self) -> str:
        """One short name of the environment, for a label: the image, else Python's version."""
        if self.environment.get("image"):
            return self.environment["image"]
        return f"python {self.environment['python']}" if "python" in self.environment else ""


def bin_index(values: FloatArray, edges: FloatArray, width: int) -> IntArray:
    """Bin of each value on ``edges`` (right-open bins); missing (NaN) goes to ``width - 1``."""
    index = np.searchsorted(edges, values, side="right").astype(np.int64)
    index[np.isnan(values)] = width - 1
    return index


def uniforms(keys: IntArray) -> FloatArray:
    """A deterministic uniform number in [0, 1) per key (splitmix64 of the key).

    The randomised probability integral transform needs one per event; keying it by the
    event's id (its hash) gives the same event the same score in any partition, at any
    offset, live or replayed.
    """
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return np.asarray((z >> np.uint64(11)).astype(np.float64) / 2.0**53, dtype=np.float64)


@dataclass
class NumericReference:
    edges: FloatArray
    counts: IntArray  # per bin, then missing: length bins + 1
    grid: FloatArray  # reference quantiles at probabilities (i + 0.5) / len(grid)
    mean: float
    variance: float
    minimum: float
    maximum: float
    missing_rate: float
    count: int

    @classmethod
    def from_sample(cls, values: FloatArray, bins: int) -> NumericReference | None:
        finite = values[~np.isnan(values)]
        if finite.size < 2:
            return None
        edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
        width = bins + 1
        counts = np.bincount(bin_index(values, edges, width), minlength=width)
        size = min(GRID_SIZE, finite.size)
        # inverted_cdf keeps observed values, so a discrete feature's ties stay ties
        grid = np.quantile(finite, (np.arange(size) + 0.5) / size, method="inverted_cdf")
        return cls(
            edges,
            counts,
            np.asarray(grid, dtype=np.float64),
            float(finite.mean()),
            float(finite.var()),
            float(finite.min()),
            float(finite.max()),
            float(np.isnan(values).mean()),
            int(values.size),
        )

    def normal_scores(self, values: FloatArray, u: FloatArray) -> FloatArray:
        """Values mapped to N(0, 1) under the reference; NaN stays NaN.

        The randomised probability integral transform: a value's position in the reference
        CDF, drawn uniformly (with ``u``) across the CDF's jump where the value is tied (a
        discrete feature, a point mass at zero), interpolated between quantiles elsewhere.
        Whatever the feature's distribution, a stationary stream gives standard normal
        scores, so one calibration serves every feature.
        """
        n = len(self.grid)
        left = np.searchsorted(self.grid, values, side="left")
        right = np.searchsorted(self.grid, values, side="right")
        inside = np.interp(values, self.grid, (np.arange(n) + 0.5) / n)
        tied = (left + u * (right - left)) / n
        below, above = u * 0.5 / n, 1.0 - u * 0.5 / n
        p = np.where(
            right > left, tied, np.where(left == 0, below, np.where(left == n, above, inside))
        )
        p = np.clip(p, 1e-12, 1.0 - 1e-12)
        z = np.asarray(special.ndtri(p), dtype=np.float64)
        z[np.isnan(values)] = np.nan
        return z


@dataclass
class CategoricalReference:
    categories: list[str]
    counts: IntArray  # per category, then "other", then missing
    missing_rate: float
    count: int
    index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.index = {c: i for i, c in enumerate(self.categories)}

    @property
    def width(self) -> int:
        return len(self.categories) + 2

    @classmethod
    def from_sample(cls, values: npt_object) -> CategoricalReference:
        missing = np.array([v is None for v in values], dtype=bool)
        # Counted as Python strings: a fixed-width numpy string array would be as wide as the
        # longest value, times the events.
        tally = Counter(str(v) for v in values[~missing])
        ranked = sorted(tally.items(), key=lambda item: (-item[1], item[0]))[:MAX_CATEGORIES]
        categories = [c for c, _ in ranked]
        kept = np.array([n for _, n in ranked], dtype=np.int64)
        counts = np.array(list(tally.values()), dtype=np.int64)
        other = int(counts.sum() - kept.sum())
        table = np.concatenate([kept, [other, int(missing.sum())]]).astype(np.int64)
        return cls(categories, table, float(missing.mean()) if len(values) else 0.0, len(values))

    def codes(self, values: npt_object) -> IntArray:
        """Column of each value: its category, ``other``, or ``missing`` (the last)."""
        # One dict lookup per value, O(events) memory whatever the strings hold (a fixed-width
        # numpy string array would cost events x the longest value).
        get, other = self.index.get, len(self.categories)
        return np.fromiter(
            (
                other + 1 if v is None else get(v if type(v) is str else str(v), other)
                for v in values
            ),
            dtype=np.int64,
            count=len(values),
        )


npt_object = Any  # a 1-d numpy array of dtype object (numpy's typing cannot say more)


@dataclass
class Profile:
    lineage: Lineage
    signals: list[Signal]
    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    bins: int
    # Binary models with labelled reference data: P(label positive | score bin), for
    # CALIBRATION_BINS equal-width score bins (used by the quality estimate).
    calibration: list[float] | None = None
    # Labelled reference data (binary, multiclass): [errors, labelled predictions], the
    # reference error rate of the version's quality alarms (docs/quality.md).
    errors: list[int] | None = None

    def calibrate(self, scores: FloatArray) -> FloatArray:
        """Calibrated probabilities of scores (the scores themselves without a map)."""
        if self.calibration is None:
            return scores
        rates = np.asarray(self.calibration)
        index = np.clip((scores * len(rates)).astype(np.int64), 0, len(rates) - 1)
        return np.asarray(rates[index], dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for s in self.signals:
            if s.key in self.numeric:
                n = self.numeric[s.key]
                body[s.key] = {
                    "kind": "numeric",
                    **{
                        k: (v.tolist() if isinstance(v, np.ndarray) else v)
                        for k, v in asdict(n).items()
                    },
                }
            elif s.key in self.categorical:
                c = self.categorical[s.key]
                body[s.key] = {
                    "kind": "categorical",
                    "categories": c.categories,
                    "counts": c.counts.tolist(),
                    "missing_rate": c.missing_rate,
                    "count": c.count,
                }
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "bins": self.bins,
            "lineage": asdict(self.lineage),
            "signals": body,
            "calibration": self.calibration,
            "errors": self.errors,
        }

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def from_json(cls, data: dict[str, Any], signals: list[Signal]) -> Profile:
        if data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} file")
        lineage = Lineage(**data["lineage"])  # fields added later have defaults
        numeric, categorical = {}, {}
        for s in signals:
            body = data["signals"].get(s.key)
            if body is None:
                continue
            if body["kind"] != s.type:
                raise ValueError(
                    f"{s.key} is {body['kind']} in the profile, {s.type} in the config"
                )
            fields = {k: v for k, v in body.items() if k != "kind"}
            if s.type == "numeric":
                for k in ("edges", "grid"):
                    fields[k] = np.asarray(fields[k], dtype=np.float64)
                fields["counts"] = np.asarray(fields["counts"], dtype=np.int64)
                numeric[s.key] = NumericReference(**fields)
            else:
                fields["counts"] = np.asarray(fields["counts"], dtype=np.int64)
                categorical[s.key] = CategoricalReference(**fields)
        bins, calibration, errors = int(data["bins"]), data.get("calibration"), data.get("errors")
        return cls(lineage, signals, numeric, categorical, bins, calibration, errors)

    @classmethod
    def load(cls, path: Path, signals: list[Signal]) -> Profile:
        return cls.from_json(json.loads(path.read_text()), signals)


def build_profile(
    lineage: Lineage, signals: list[Signal], columns: dict[str, Any], bins: int
) -> Profile:
    """A profile from sample columns keyed by :attr:`Signal.key` (float arrays for numeric
    signals with NaN for missing, object arrays for categorical ones)."""
    numeric: dict[str, NumericReference] = {}
    categorical: dict[str, CategoricalReference] = {}
    for s in signals:
        column = columns[s.key]
        if s.type == "numeric":
            ref = NumericReference.from_sample(np.asarray(column, dtype=np.float64), bins)
            if ref is not None:
                numeric[s.key] = ref
        else:
            categorical[s.key] = CategoricalReference.from_sample(column)
    if not lineage.created_at:
        lineage = Lineage(
            **{**asdict(lineage), "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        )
    return Profile(lineage, signals, numeric, categorical, bins)


def calibration_map(scores: FloatArray, positive: npt.NDArray[np.bool_]) -> list[float]:
    """P(positive | score bin) over CALIBRATION_BINS equal-width bins, with a +1/+2
    (Laplace) prior so that an empty bin maps to 0.5."""
    index = np.clip((scores * CALIBRATION_BINS).astype(np.int64), 0, CALIBRATION_BINS - 1)
    hits = np.bincount(index, weights=positive.astype(np.float64), minlength=CALIBRATION_BINS)
    totals = np.bincount(index, minlength=CALIBRATION_BINS)
    return [float(r) for r in (hits + 1.0) / (totals + 2.0)]
