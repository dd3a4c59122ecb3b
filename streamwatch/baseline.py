"""Baseline: build a model version's reference profile from training or validation data.

Rows come from JSONL (prediction events, read through the ``contract:`` mapping with their
label when they carry one, or flat records), CSV (a header row; empty cells are missing) or
Parquet (with the ``parquet`` extra). A flat row holds each feature under its name, the
model's output under ``prediction`` and, optionally, the truth under ``label``. Labels are
positive by the worker's own rule (:func:`streamwatch.decode.is_positive`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamwatch.coding import signals_of
from streamwatch.config import ContractSettings, ModelSpec, Settings
from streamwatch.decode import flat_row, is_positive
from streamwatch.errors import ConfigError, ConfigProblem, StreamwatchError
from streamwatch.progress import Progress
from streamwatch.reference import Lineage, Profile, build_profile, calibration_map


class DataError(StreamwatchError):
    """Raised when a baseline data file cannot be read as rows."""


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:16]}"


def read_rows(path: Path, contract: ContractSettings | None = None) -> Iterator[dict[str, Any]]:
    """Flat rows of a data file. A JSONL line shaped like a prediction event is read through
    the ``contract:`` mapping (features, prediction, label), as the worker reads it."""
    contract = contract or ContractSettings()
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as error:
                    raise DataError(f"{path}:{number}: not JSON ({error})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: not a JSON object")
                yield flat_row(row, contract) or row
    elif suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                yield {k: (v if v != "" else None) for k, v in row.items()}
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq  # an optional extra
        except ImportError:
            raise DataError(
                "reading Parquet needs the extra: pip install 'streamwatch[parquet]'"
            ) from None
        yield from pq.read_table(path).to_pylist()
    else:
        raise DataError(f"{path}: unknown format {suffix!r}; use .jsonl, .csv or .parquet")


# Packages whose versions describe a training environment, recorded when installed.
ML_PACKAGES = ("numpy", "pandas", "scikit-learn", "xgboost", "lightgbm", "torch", "tensorflow")


def environment(image: str = "") -> dict[str, str]:
    """What built the model: the image digest given, and this Python and its ML packages."""
    found = {"python": platform.python_version()}
    if image:
        found["image"] = image
    for name in ML_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def build(
    settings: Settings,
    data: Path,
    model: str,
    model_version: str,
    run_id: str = "",
    data_snapshot: str = "",
    code_revision: str = "",
    image: str = "",
    metrics: dict[str, float] | None = None,
) -> Profile:
    spec: ModelSpec | None = settings.model(model)
    if spec is None:
        names = ", ".join(m.name for m in settings.models)
        raise DataError(f"model {model!r} is not in the config (it has: {names})")
    signals = signals_of(spec)
    rows = list(read_rows(data, settings.contract))
    if not rows:
        raise DataError(f"{data}: no rows")
    progress = Progress(len(signals), "profiling signals")
    columns: dict[str, Any] = {}
    for i, s in enumerate(signals, 1):
        raw = [row.get(s.name) for row in rows]
        if s.type == "numeric":
            columns[s.key] = np.array([_number(v) for v in raw])
        else:
            columns[s.key] = np.array([None if v is None else str(v) for v in raw], dtype=object)
        progress.update(i)
    progress.close()
    lineage = Lineage(
        model,
        model_version,
        run_id,
        data_snapshot or file_hash(data),
        code_revision,
        rows=len(rows),
        source=data.name,
        features=[f.name for f in spec.features],
        environment=environment(image),
        metrics=dict(metrics or {}),
    )
    profile = build_profile(lineage, signals, columns, settings.drift.bins)
    labelled = [
        row for row in rows if row.get("label") is not None and row.get("prediction") is not None
    ]
    if spec.task == "binary" and labelled:
        # labelled reference data: calibrate the quality estimate on it, and the error rate
        scores = np.array([_number(row["prediction"]) for row in labelled])
        positive = np.array([is_positive(row["label"], spec.positive_labels) for row in labelled])
        keep = ~np.isnan(scores)
        profile.calibration = calibration_map(scores[keep], positive[keep])
        wrong = (scores[keep] >= settings.quality.threshold) != positive[keep]
        profile.errors = [int(wrong.sum()), int(keep.sum())]
    elif spec.task == "multiclass" and labelled:
        wrong = [_class(row["prediction"]) != _class(row["label"]) for row in labelled]
        profile.errors = [sum(wrong), len(wrong)]
    return profile


def _class(value: Any) -> str:
    """A class as the worker names it (a whole number read as a float is that integer)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def load_profiles(settings: Settings) -> dict[tuple[str, str], Profile]:
    """Every profile the config lists, keyed by (model, model_version)."""
    profiles: dict[tuple[str, str], Profile] = {}
    problems = []
    for i, spec in enumerate(settings.models):
        for j, path in enumerate(spec.reference.profiles):
            where = f"models.{i}.reference.profiles.{j}"
            try:
                profile = Profile.load(path, signals_of(spec))
            except (ValueError, KeyError, TypeError) as error:
                problems.append(
                    ConfigProblem(
                        where, f"{path}: {error}", "rebuild it with `streamwatch baseline`"
                    )
                )
                continue
            if profile.lineage.model != spec.name:
                problems.append(
                    ConfigProblem(
                        where,
                        f"{path} is a profile of model {profile.lineage.model!r}",
                        f"list it under the model {profile.lineage.model!r}",
                    )
                )
                continue
            profiles[(spec.name, profile.lineage.model_version)] = profile
    if problems:
        raise ConfigError("reference profiles", problems)
    return profiles


def with_profiles(settings: Settings, paths: list[Path]) -> Settings:
    """The settings with more profile files, each under the model its lineage names."""
    extra: dict[str, list[Path]] = {}
    for path in paths:
        try:
            model = json.loads(path.read_text())["lineage"]["model"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(
                str(path),
                [
                    ConfigProblem(
                        "--profile",
                        f"{path}: not a readable profile ({error})",
                        "pass a file written by `streamwatch baseline`",
                    )
                ],
            ) from None
        if settings.model(model) is None:
            raise ConfigError(
                str(path),
                [
                    ConfigProblem(
                        "--profile",
                        f"{path} is a profile of model {model!r}, not in the config",
                        "add the model to the config, or pass its own profile",
                    )
                ],
            )
        extra.setdefault(model, []).append(path)
    models = [
        m.model_copy(
            update={
                "reference": m.reference.model_copy(
                    update={"profiles": [*m.reference.profiles, *extra.get(m.name, [])]}
                )
            }
        )
        for m in settings.models
    ]
    return settings.model_copy(update={"models": models})
