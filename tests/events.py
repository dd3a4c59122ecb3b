"""Builders of contract-shaped test events."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

T0_MS = 1_790_000_000_000


def prediction(
    i: int,
    amount: float = 10.0,
    age: float = 30.0,
    country: str = "DE",
    score: float = 0.1,
    model: str = "fraud",
    version: str = "v1",
) -> dict[str, Any]:
    return {
        "prediction_id": f"p{i}",
        "model": model,
        "model_version": version,
        "timestamp": T0_MS + i * 1000,
        "features": {"amount": amount, "age": age, "country": country},
        "prediction": score,
        "attributes": {"country": country},
    }


def stream(start: int, n: int, seed: int, amount_shift: float = 0.0) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) predictions with normal features; ``amount`` shifted by sigmas."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(100.0 + 15.0 * amount_shift, 15.0, n)
    age = rng.normal(40.0, 10.0, n)
    out = []
    for k in range(n):
        i = start + k
        event = prediction(i, float(amount[k]), float(age[k]), ["DE", "FR", "US"][i % 3])
        out.append((f"p{i}".encode(), orjson.dumps(event)))
    return out


def label(i: int, value: bool = True) -> tuple[bytes, bytes]:
    return f"p{i}".encode(), orjson.dumps(
        {"prediction_id": f"p{i}", "label": value, "timestamp": T0_MS + i * 1000 + 60_000}
    )
