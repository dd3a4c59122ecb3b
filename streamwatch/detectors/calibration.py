"""Thresholds for CUSUM charts from a false-alarm budget (Brook and Evans' Markov chain).

A one-sided CUSUM ``S_t = max(0, S_{t-1} + Y_t)`` raises an alarm when ``S_t > h``. Its
in-control average run length (ARL: events between false alarms) follows from the
distribution of the increment ``Y`` by discretising ``[0, h]`` into a Markov chain
(Brook & Evans, Biometrika 1972); :func:`threshold` inverts it by bisection.

The increments come from normal scores (see :mod:`streamwatch.reference`), which are
N(0, 1) on a stationary stream whatever the feature's own distribution:

* mean charts: ``Y = ±z - k``;
* scale charts: ``Y = ±(|z| - m) / s - k`` with ``m = sqrt(2/pi)``, ``s = sqrt(1 - 2/pi)``,
  the mean and standard deviation of ``|z|``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TypeVar

import numpy as np
from scipy import special

from streamwatch.statistics import FloatArray

HALF_NORMAL_MEAN = math.sqrt(2.0 / math.pi)
HALF_NORMAL_STD = math.sqrt(1.0 - 2.0 / math.pi)
STATES = 400  # Markov-chain states; the ARL is accurate to well under 1% at this size
CACHE_ENV = "STREAMWATCH_CALIBRATION_CACHE"
CACHE_VERSION = 1  # bump with any change to how a threshold is computed (STATES included)

log = logging.getLogger(__name__)

Cdf = Callable[[FloatArray], FloatArray]
T = TypeVar("T", int, float)


def increment_cdf(chart: str, k: float) -> Cdf:
    """CDF of a chart's increment on a stationary stream."""
    m, s = HALF_NORMAL_MEAN, HALF_NORMAL_STD
    if chart == "mean":  # +z and -z are alike
        return lambda y: np.asarray(special.ndtr(y + k), dtype=np.float64)
    if chart == "scale_up":
        return lambda y: np.clip(2.0 * special.ndtr(m + s * (y + k)) - 1.0, 0.0, 1.0)
    if chart == "scale_down":
        return lambda y: 1.0 - np.clip(2.0 * special.ndtr(m - s * (y + k)) - 1.0, 0.0, 1.0)
    raise ValueError(f"unknown chart {chart!r}")


def average_run_length(cdf: Cdf, h: float, states: int = STATES) -> float:
    """In-control ARL of a one-sided CUSUM with threshold ``h``, starting from 0."""
    w = 2.0 * h / (2 * states - 1)
    centres = np.arange(states) * w
    upper = (np.arange(states) + 0.5) * w
    # P(i -> j) = F(upper_j - c_i) - F(upper_{j-1} - c_i); j = 0 takes everything below w/2.
    f = cdf(upper[None, :] - centres[:, None])
    transition = np.diff(np.concatenate([np.zeros((states, 1)), f], axis=1), axis=1)
    transition[:, 0] = f[:, 0]
    run_lengths = np.linalg.solve(np.eye(states) - transition, np.ones(states))
    return float(run_lengths[0])


@cache
def threshold(chart: str, k: float, target_arl: float) -> float:
    """The smallest ``h`` whose in-control ARL reaches ``target_arl`` (``h`` to 0.1%, above).

    The log of the ARL is close to linear in ``h`` (it grows about exponentially), so a
    false-position search on it (the Illinois variant) needs 7 or so Markov-chain
    solves where bisection needs 16. The calibration runs once per model version, in the
    batch that ends its warm-up, and its thresholds are kept on disk (:func:`cache_file`):
    a restarted worker reads them instead of solving again."""
    return kept(f"{chart} {k!r} {target_arl!r}", lambda: _search(chart, k, target_arl))


def kept(name: str, solve: Callable[[], float]) -> float:
    """A threshold from the file (:func:`cache_file`) under ``name``, else ``solve()``d and
    added to it. ``name`` says everything the threshold depends on."""
    key = f"v{CACHE_VERSION} {name}"
    stored = _stored().get(key)
    if stored is not None:
        return stored
    h = solve()
    _store(key, h)
    return h


def cache_file() -> Path | None:
    """Where thresholds are kept between runs: ``$STREAMWATCH_CALIBRATION_CACHE`` (empty: not
    kept), else ``thresholds.json`` under ``$XDG_CACHE_HOME/streamwatch`` (default
    ``~/.cache/streamwatch``). Every entry carries the calibration's version, which changes
    whenever the calibration does, so an entry from another release is never read."""
    named = os.environ.get(CACHE_ENV)
    if named is not None:
        return Path(named) if named else None
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "streamwatch" / "thresholds.json"


_cache: dict[str, float] | None = None  # the file's thresholds, read once per process


def _stored() -> dict[str, float]:
    global _cache
    if _cache is None:
        _cache = {}
        path = cache_file()
        try:
            if path is not None and path.exists():
                data = json.loads(path.read_text())
                values = {str(k): float(v) for k, v in data.items()}
                # a threshold is finite and not negative: anything else (NaN would never
                # alarm) is not trusted, and solved again
                _cache = {k: v for k, v in values.items() if math.isfinite(v) and v >= 0}
        except (OSError, ValueError, TypeError, AttributeError) as error:  # solve again
            log.warning("calibration cache %s not read (%s); thresholds are solved", path, error)
    return _cache


def _store(key: str, h: float) -> None:
    """Add a threshold to the file: written whole to a temporary file, then renamed over it
    (a reader never sees half a file; two workers racing lose an entry, never the file). A
    cache that cannot be written is skipped: it only saves time."""
    stored = _stored()
    stored[key] = h
    path = cache_file()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(stored, indent=0, sort_keys=True))
        os.replace(temporary, path)
    except OSError as error:
        log.debug("calibration cache %s not written: %s", path, error)


def _search(chart: str, k: float, target_arl: float) -> float:
    cdf = increment_cdf(chart, k)
    goal = math.log(target_arl)

    def gap(h: float) -> float:
        return math.log(average_run_length(cdf, h)) - goal

    lo, f_lo = 0.0, gap(0.0)
    if f_lo >= 0:
        return 0.0  # any threshold reaches it
    hi, f_hi = 1.0, gap(1.0)
    while f_hi < 0:  # extrapolate the line through the last two points, a little past it
        step = (hi - lo) * -f_hi / max(f_hi - f_lo, 1e-12)
        nxt = hi + min(max(1.1 * step, 0.05 * hi), 8.0 * hi)
        if nxt > 1e4:
            raise ValueError(f"no threshold reaches an ARL of {target_arl:g}")
        lo, f_lo, hi, f_hi = hi, f_hi, nxt, gap(nxt)

    def inside(lo: float, f_lo: float, hi: float, f_hi: float) -> float:
        mid = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        return min(max(mid, lo + 1e-8 * hi), hi - 1e-8 * hi)  # strictly inside the bracket

    hi = false_position(gap, lo, f_lo, hi, f_hi, inside, lambda lo, hi: hi - lo <= 1e-7 * hi)
    return _as_bisection(hi)


def false_position(
    gap: Callable[[T], float],
    lo: T,
    f_lo: float,
    hi: T,
    f_hi: float,
    inside: Callable[[T, float, T, float], T],
    narrow: Callable[[T, T], bool],
) -> T:
    """The upper end of a bracket ``gap(lo) < 0 <= gap(hi)`` narrowed by false position
    (the Illinois variant: an end that stays put twice gets half its weight) until
    ``narrow``; ``inside`` picks the next point from the ends and their gaps."""
    side = 0
    while not narrow(lo, hi):
        mid = inside(lo, f_lo, hi, f_hi)
        f_mid = gap(mid)
        if f_mid < 0:
            lo, f_lo = mid, f_mid
            if side == -1:
                f_hi /= 2.0
            side = -1
        else:
            hi, f_hi = mid, f_mid
            if side == 1:
                f_lo /= 2.0
            side = 1
    return hi


def _as_bisection(root: float) -> float:
    """The ``h`` the bisection to 0.1% this search replaced returned for this root (the ARL
    grows with ``h``: "ARL(x) < target" is "x < root"), so that thresholds, and every alarm
    computed with them, stay as they were."""
    lo, hi = 0.0, 1.0
    while hi < root:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-3 * hi:
        mid = (lo + hi) / 2.0
        if mid < root:
            lo = mid
        else:
            hi = mid
    return hi
