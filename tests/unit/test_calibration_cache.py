"""Thresholds kept on disk between runs: written once, read by the next process, never
required (a cache that cannot be read or written only costs the solve)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamwatch.detectors import bernoulli, calibration
from streamwatch.detectors.calibration import CACHE_ENV, cache_file, threshold

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A cache file of this test's own, and no thresholds remembered in this process."""
    path = tmp_path / "cache" / "thresholds.json"
    monkeypatch.setenv(CACHE_ENV, str(path))
    monkeypatch.setattr(calibration, "_cache", None)
    threshold.cache_clear()
    yield path
    threshold.cache_clear()


def _solved_elsewhere(path: Path) -> float:
    """The same threshold from a new process with the cache at ``path``."""
    code = "from streamwatch.detectors.calibration import threshold as t\n"
    code += "print(t('mean', 0.35, 1e7))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={CACHE_ENV: str(path), "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


def test_a_threshold_solved_once_is_read_by_the_next_process(fresh: Path) -> None:
    h = threshold("mean", 0.35, 1e7)
    assert json.loads(fresh.read_text()) == {"v1 mean 0.35 10000000.0": h}
    # the next process reads the file: a value planted there is what it returns
    fresh.write_text(json.dumps({"v1 mean 0.35 10000000.0": 1.25}))
    assert _solved_elsewhere(fresh) == 1.25


def test_the_cached_value_is_the_solved_one(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = threshold("scale_up", 0.3, 1e6)
    monkeypatch.setenv(CACHE_ENV, "")  # not kept: solved afresh
    monkeypatch.setattr(calibration, "_cache", None)
    threshold.cache_clear()
    assert cache_file() is None
    assert threshold("scale_up", 0.3, 1e6) == cached


def test_a_cache_that_cannot_be_written_or_read_costs_only_the_solve(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked / "thresholds.json"))  # its folder is a file
    h = threshold("mean", 0.7, 1e6)
    assert h > 0
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    monkeypatch.setenv(CACHE_ENV, str(garbled))
    monkeypatch.setattr(calibration, "_cache", None)
    threshold.cache_clear()
    assert threshold("mean", 0.7, 1e6) == h
    for planted in ("NaN", "-1.0", "Infinity", '"high"', "null", "[1]"):  # never trusted
        garbled.write_text(f'{{"v1 mean 0.7 1000000.0": {planted}}}')
        monkeypatch.setattr(calibration, "_cache", None)
        threshold.cache_clear()
        assert threshold("mean", 0.7, 1e6) == h, planted


def test_quality_thresholds_are_kept_beside_the_drift_ones(fresh: Path) -> None:
    """The Bernoulli CUSUM's thresholds (quality, categories) go to the same file."""
    h = bernoulli.threshold(0.05, 3, 1, 1e6)
    key = "v1 bernoulli 0.05 3 1 1000000.0"
    assert json.loads(fresh.read_text()) == {key: h}
    fresh.write_text(json.dumps({key: h + 7}))  # what the next process reads
    calibration._cache = None
    bernoulli.threshold.cache_clear()
    assert bernoulli.threshold(0.05, 3, 1, 1e6) == h + 7
    bernoulli.threshold.cache_clear()
