"""The label side through the public interface: Quality.apply, then its snapshot."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn import metrics

from streamwatch.config import parse_settings
from streamwatch.exporter import QualityCollector
from streamwatch.quality import Quality
from streamwatch.records import Label, Prediction
from streamwatch.reference import Lineage, Profile, Signal, build_profile, calibration_map

T0 = 1_790_000_000.0


def settings(**overrides: Any) -> Any:
    config: dict[str, Any] = {
        "models": [
            {
                "name": "m",
                "task": "binary",
                "features": [{"name": "x", "type": "numeric"}],
                "slices": [{"name": "country", "keys": ["country"], "max_values": 3}],
            }
        ],
        "labels": {"ttl_seconds": 3600, "early_hold_seconds": 60},
        "quality": {"windows": [{"events": 400}, {"seconds": 3600}], "min_window_events": 10},
    }
    config.update(overrides)
    return parse_settings(config)


def pred(
    i: int,
    score: float,
    country: str = "DE",
    t: float | None = None,
    task_value: Any = None,
    partition: int = 0,
    *,
    model: str = "m",
    version: str = "v1",
    scores: dict[str, float] | None = None,
) -> Prediction:
    return Prediction(
        f"p{i}",
        model,
        version,
        T0 + i if t is None else t,
        {"x": 1.0},
        score if task_value is None else task_value,
        scores,
        None,
        {"country": country},
        partition,
        i,
    )


def intent(**extra: Any) -> dict[str, Any]:
    """A multiclass model's config."""
    return {
        "name": "intent",
        "task": "multiclass",
        "features": [{"name": "x", "type": "numeric"}],
        **extra,
    }


def lab(i: int, value: float | str, t: float | None = None, partition: int = 0) -> Label:
    return Label(f"p{i}", value, T0 + i + 600 if t is None else t, partition, i)


def scores(q: Quality, slice_name: str = "__all__", window: str = "events_400") -> dict[str, float]:
    return {s: v for (_, _, sl, s, w, v) in q.snapshot().scores if sl == slice_name and w == window}


def test_late_and_out_of_order_labels_give_the_scores_of_scikit_learn() -> None:
    q = Quality(settings())
    rng = np.random.default_rng(0)
    n = 300
    s = rng.random(n)
    y = rng.random(n) < s
    q.apply([pred(i, float(s[i])) for i in range(n)], [])
    order = rng.permutation(n)  # labels arrive shuffled, minutes later
    for chunk in np.array_split(order, 7):
        q.apply([], [lab(int(i), float(y[i])) for i in chunk])
    got = scores(q)
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(y, s >= 0.5))
    assert got["f1"] == pytest.approx(metrics.f1_score(y, s >= 0.5))
    assert got["brier"] == pytest.approx(metrics.brier_score_loss(y, s))
    assert got["log_loss"] == pytest.approx(metrics.log_loss(y, s))
    assert abs(got["roc_auc"] - metrics.roc_auc_score(y, s)) < 0.02
    snap = q.snapshot()
    assert snap.joined == {("m", "v1"): n}
    assert snap.pending == {"m": 0}
    assert scores(q, window="1h")["accuracy"] == got["accuracy"]


def test_a_label_before_its_prediction_waits_and_then_joins() -> None:
    q = Quality(settings())
    q.apply([], [lab(1, 1.0, t=T0)])
    q.apply([pred(1, 0.9, t=T0 + 1)], [])
    assert q.snapshot().joined == {("m", "v1"): 1}


def test_duplicates_count_once_and_unknown_labels_expire_unmatched() -> None:
    q = Quality(settings())
    q.apply([pred(1, 0.9), pred(1, 0.1)], [])  # the second prediction with that id: ignored
    q.apply([], [lab(1, 1.0), lab(1, 0.0)])  # first label wins; the repeat waits...
    q.apply([], [lab(2, 1.0), lab(2, 1.0)])  # two labels for an id never predicted
    # ...until predictions move past the early hold
    q.apply([pred(10, 0.5, t=T0 + 2000)], [])
    snap = q.snapshot()
    assert snap.joined == {("m", "v1"): 1}
    assert snap.duplicate_predictions == {"m": 1}
    assert snap.duplicate_labels == 1  # p2's second label, while the first was waiting
    assert snap.unmatched_labels == 2  # p1's repeat and p2's first label
    assert snap.totals[("m", "v1", "__all__")].get("cells").tolist() == [1, 0, 0, 0]


def test_predictions_without_labels_expire_after_the_ttl() -> None:
    q = Quality(settings())
    q.apply([pred(i, 0.5) for i in range(5)], [])
    q.apply([pred(5, 0.5, t=T0 + 4000)], [lab(5, 1.0, t=T0 + 4000 + 10)])  # labels at +1h
    snap = q.snapshot()
    assert snap.expired == {("m", "v1"): 5}
    assert snap.pending == {"m": 0}


@pytest.mark.parametrize("detector", ["cusum", "adwin"])
def test_a_degraded_slice_drops_more_than_the_whole(detector: str) -> None:
    quality = {"windows": [{"events": 5000}], "min_window_events": 10}
    quality |= {"concept_detector": detector, "reference_labels": 100}
    q = Quality(settings(quality=quality))
    rng = np.random.default_rng(1)
    n = 6000
    countries = np.where(rng.random(n) < 0.05, "IS", "DE")
    s = rng.random(n)
    y = rng.random(n) < s
    bad = (countries == "IS") & (np.arange(n) >= 3000)
    y[bad] = ~(s[bad] >= 0.5)  # after event 3000 the model is always wrong in Iceland
    q.apply([pred(i, float(s[i]), str(countries[i])) for i in range(n)], [])
    q.apply([], [lab(i, float(y[i])) for i in range(n)])
    whole = scores(q, window="events_5000")["accuracy"]
    iceland = scores(q, "country=IS", "events_5000")["accuracy"]
    germany = scores(q, "country=DE", "events_5000")["accuracy"]
    assert iceland < germany - 0.2
    assert germany - whole < 0.05
    snap = q.snapshot()
    assert snap.concept_alarms.get(("m", "v1", "country=IS", detector), 0) >= 1
    # the latest alarm came from a label after Iceland went wrong (labels at T0 + i + 600)
    assert snap.concept_last_alarm[("m", "v1", "country=IS", detector)] > T0 + 3000 + 600


def exported_slices(registry: CollectorRegistry) -> set[str]:
    samples = [s for m in registry.collect() for s in m.samples]
    return {
        s.labels["slice"] for s in samples if "model_version" in s.labels and "slice" in s.labels
    }


def test_slice_cardinality_is_bounded_and_the_heavy_hitters_tracked() -> None:
    """10^6 distinct values, each seen once and each batch led by them, beside three
    frequent ones: the frequent ones are tracked, the rest overflow, series stay bounded."""
    q = Quality(settings())
    registry = CollectorRegistry()
    registry.register(QualityCollector(q))
    n = 1_000_000  # distinct slice values in the input
    heavy = ["DE"] * 10_000 + ["FR"] * 5_000 + ["IS"] * 2_500
    i = 0
    for start in range(0, n, 50_000):
        countries = [f"c{j}" for j in range(start, start + 50_000)] + heavy
        ids = range(i, i + len(countries))
        i += len(countries)
        q.apply(
            [pred(k, 0.7, country=c) for k, c in zip(ids, countries, strict=True)],
            [lab(k, 1.0) for k in ids],
        )
    assert exported_slices(registry) == {
        "__all__",
        "country=DE",
        "country=FR",
        "country=IS",
        "country:__other__",
    }
    assert (
        registry.get_sample_value(
            "streamwatch_slice_overflow_total", {"model": "m", "slice": "country"}
        )
        == n
    )
    assert (
        registry.get_sample_value("streamwatch_slice_values", {"model": "m", "slice": "country"})
        == 3
    )


def test_regression_and_multiclass_models() -> None:
    q = Quality(
        parse_settings(
            {
                "models": [
                    {
                        "name": "eta",
                        "task": "regression",
                        "features": [{"name": "x", "type": "numeric"}],
                    },
                    intent(),
                ],
                "quality": {"windows": [{"events": 100}], "min_window_events": 1},
            }
        )
    )
    preds = [
        Prediction(f"r{i}", "eta", "1", T0 + i, {"x": 1.0}, float(i), None, None, {}, 0, i)
        for i in range(10)
    ]
    preds += [pred(i, 0.0, task_value=["a", "b"][i % 2], model="intent") for i in range(10)]
    labels = [Label(f"r{i}", float(i) + 1.0, T0 + i, 0, i) for i in range(10)]
    labels += [lab(i, "a", t=T0 + i) for i in range(10)]
    q.apply(preds, labels)
    got = {(m, s): v for (m, _, sl, s, _, v) in q.snapshot().scores if sl == "__all__"}
    assert got[("eta", "mae")] == 1.0
    assert got[("eta", "bias")] == -1.0
    assert got[("intent", "accuracy")] == 0.5


def test_revoking_a_partition_drops_its_pending_predictions() -> None:
    q = Quality(settings())
    q.assign([0, 1])
    q.apply([pred(1, 0.5, partition=0), pred(2, 0.5, partition=1)], [])
    assert q.snapshot().pending == {"m": 2}
    q.revoke([0])
    assert q.snapshot().pending == {"m": 1}


def _miscalibrated(seed: int) -> tuple[Any, Any, Profile]:
    """40,000 scores p^2 of true probabilities p, their labels, and a profile whose
    calibration map is fitted on the first 20,000."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 2, 40_000)
    y = rng.random(40_000) < p
    scores = p**2
    signals = [Signal("feature", "x", "numeric"), Signal("prediction", "prediction", "numeric")]
    profile = build_profile(
        Lineage("m", "v1"),
        signals,
        {"feature:x": np.ones(20_000), "prediction:prediction": scores[:20_000]},
        bins=10,
    )
    profile.calibration = calibration_map(scores[:20_000], y[:20_000])
    return scores, y, profile


def test_the_estimate_calibrates_on_labelled_reference_data() -> None:
    """A model whose scores are miscalibrated (score = p^2): with a calibration map from
    labelled reference data the estimate finds the true accuracy; without one it cannot."""
    scores, y, profile = _miscalibrated(seed=3)
    live = [pred(i, float(scores[i])) for i in range(20_000, 40_000)]
    realized = float(np.mean((scores[20_000:] >= 0.5) == y[20_000:]))

    def estimated(q: Quality) -> float:
        q.apply(live, [])
        return next(
            v
            for (_, _, sl, s, w, v) in q.snapshot().estimated
            if sl == "__all__" and s == "accuracy" and w == "1h"
        )

    with_map = estimated(Quality(settings(), {("m", "v1"): profile}))
    without = estimated(Quality(settings()))
    assert abs(with_map - realized) < 0.02
    assert abs(without - realized) > 0.05


def test_the_estimate_error_measures_the_exported_calibrated_estimate() -> None:
    """On labelled predictions, the estimate error compares the realized score with the
    estimator /metrics exports (calibrated by the profile), not with the raw scores."""
    scores, y, profile = _miscalibrated(seed=4)  # the raw estimate is far off
    q = Quality(settings(), {("m", "v1"): profile})
    live = range(20_000, 24_000)
    q.apply([pred(i, float(scores[i])) for i in live], [lab(i, float(y[i])) for i in live])
    error = next(
        v
        for (_, _, sl, s, w, v) in q.snapshot().estimate_error
        if sl == "__all__" and s == "accuracy" and w == "events_400"
    )
    assert abs(error) < 0.06  # with the raw scores it was 0.107 on this stream


def test_multiclass_probabilities_give_losses_auc_and_an_estimate() -> None:
    classes = ["a", "b", "c"]
    q = Quality(
        parse_settings(
            {
                "models": [intent(classes=classes)],
                "quality": {"windows": [{"events": 1000}], "min_window_events": 10},
            }
        )
    )
    rng = np.random.default_rng(11)
    probabilities = rng.dirichlet([1.0, 1.0, 1.0], 400)
    actual = (rng.random(400)[:, None] > probabilities.cumsum(axis=1)).sum(axis=1)
    preds = [
        pred(
            i,
            0.0,
            task_value=classes[int(probabilities[i].argmax())],
            model="intent",
            scores=dict(zip(classes, probabilities[i].tolist(), strict=True)),
        )
        for i in range(400)
    ]
    q.apply(preds, [])
    snap = q.snapshot()
    estimated = {s: v for (_, _, _, s, _, v) in snap.estimated}
    assert set(estimated) >= {"accuracy", "f1", "roc_auc"}
    labels = [lab(i, classes[actual[i]], t=T0 + i) for i in range(400)]
    q.apply([], labels)
    snap = q.snapshot()
    got = {s: v for (_, _, _, s, _, v) in snap.scores}
    stored = probabilities.astype(np.float32).astype(np.float64)  # kept as float32
    assert got["log_loss"] == pytest.approx(-np.mean(np.log(stored[np.arange(400), actual])))
    assert got["accuracy"] == pytest.approx(
        metrics.accuracy_score(actual, probabilities.argmax(axis=1))
    )
    assert {s for (_, _, _, s, _, _) in snap.estimate_error} >= {"accuracy", "roc_auc"}
    error = {s: v for (_, _, _, s, _, v) in snap.estimate_error}
    assert error["accuracy"] == pytest.approx(estimated["accuracy"] - got["accuracy"], abs=1e-6)


def test_series_of_a_slice_or_version_that_goes_away_are_retired() -> None:
    q = Quality(settings(exporter={"retire_after_seconds": 7200}))
    registry = CollectorRegistry()
    registry.register(QualityCollector(q))

    def traffic(start: int, countries: list[str], version: str, t0: float) -> None:
        preds = [
            pred(start + k, 0.7, country=c, t=t0 + k, version=version)
            for k, c in enumerate(countries)
        ]
        q.apply(preds, [Label(p.prediction_id, 1.0, p.timestamp + 1, 0, 0) for p in preds])

    traffic(0, ["DE", "FR", "IS"] * 1000, "v1", T0)
    assert {"country=IS", "country=FR"} <= exported_slices(registry)
    # Iceland stops; Norway starts and takes its place among the three tracked values.
    # Version v2 replaces v1, whose last activity falls more than 2h behind.
    for batch in range(10):
        t0 = T0 + 3000 + batch * 10_000
        traffic(10_000 * (batch + 1), ["DE", "FR", "NO"] * 3000, "v2", t0)
    assert exported_slices(registry) == {"__all__", "country=DE", "country=FR", "country=NO"}
    versions = {
        s.labels["model_version"]
        for m in registry.collect()
        for s in m.samples
        if "model_version" in s.labels
    }
    assert versions == {"v2"}


def test_multiclass_cells_are_exported_per_class_for_the_version() -> None:
    q = Quality(
        parse_settings({"models": [intent(slices=[{"name": "country", "keys": ["country"]}])]})
    )
    registry = CollectorRegistry()
    registry.register(QualityCollector(q))
    predicted, actual = ["a", "a", "b", "c"], ["a", "b", "b", "a"]
    preds = [pred(i, 0.0, task_value=c, model="intent") for i, c in enumerate(predicted)]
    q.apply(preds, [lab(i, c, t=T0 + i) for i, c in enumerate(actual)])

    def cell(name: str, kind: str) -> float | None:
        labels = {"model": "intent", "model_version": "v1", "slice": "__all__"}
        return registry.get_sample_value(
            "streamwatch_class_events_total", {**labels, "class": name, "cell": kind}
        )

    assert [cell("a", k) for k in ("tp", "fp", "fn")] == [1, 1, 1]
    assert [cell("b", k) for k in ("tp", "fp", "fn")] == [1, 0, 1]
    assert [cell("c", k) for k in ("tp", "fp", "fn")] == [0, 1, 0]
    per_slice = [
        s
        for m in registry.collect()
        for s in m.samples
        if s.name == "streamwatch_class_events_total"
    ]
    assert {s.labels["slice"] for s in per_slice} == {"__all__"}


def test_a_scrape_scores_the_windows_outside_the_engine_lock() -> None:
    held: list[bool] = []

    class Watched(Quality):
        def _window_scores(self, *args: Any) -> None:
            held.append(self._lock.locked())
            super()._window_scores(*args)

    q = Watched(settings())
    q.apply([pred(i, 0.9) for i in range(100)], [lab(i, 1.0) for i in range(100)])
    q.snapshot()
    assert held
    assert not any(held)


def test_key_codes_of_retired_versions_are_reused_once_nothing_carries_them() -> None:
    """Churn: 1,000 versions, each active for a moment. Their codes are freed once their
    pending predictions are gone, so the key table stays bounded (it grew for ever)."""
    q = Quality(settings(exporter={"retire_after_seconds": 600}))
    for v in range(1000):
        t = T0 + v * 100.0
        version = f"v{v}"
        q.apply(
            [pred(v * 5 + k, 0.9, t=t, version=version) for k in range(5)],
            [lab(v * 5, 1.0, t=t)],
        )
    live = {key[1] for key in q.keys.codes}
    assert len(live) <= 8  # versions seen in the last 600 s (and __other__ keys)
    assert len(q.keys.names) < 600  # without reuse: 2,000 (two keys per version)
    assert ("m", "v999", "__all__") in q.snapshot().totals  # the live versions still count


def labelled_profile() -> dict[tuple[str, str], Profile]:
    """Version v1's profile with labelled data: 500 errors in 10,000 labels (5%)."""
    signals = [Signal("feature", "x", "numeric"), Signal("prediction", "prediction", "numeric")]
    columns = {"feature:x": np.ones(100), "prediction:prediction": np.full(100, 0.9)}
    profile = build_profile(Lineage("m", "v1"), signals, columns, bins=10)
    profile.errors = [500, 10_000]
    return {("m", "v1"): profile}


@pytest.mark.parametrize("reference", ["profile", "first labels"])
def test_a_profile_with_labels_is_the_reference_of_the_version(reference: str) -> None:
    """With a profile's labelled data (5% errors) the version's error test runs from its
    first label, and a model at 20% errors is caught at once; without it, those labels are
    the reference and 20% is the norm."""
    profiles = labelled_profile() if reference == "profile" else {}
    model = {"name": "m", "task": "binary", "features": [{"name": "x", "type": "numeric"}]}
    q = Quality(settings(models=[model]), profiles)
    rng = np.random.default_rng(2)
    wrong = rng.random(3000) < 0.2
    alarms = q.apply(
        [pred(i, 0.9) for i in range(3000)],
        [lab(i, 0.0 if wrong[i] else 1.0) for i in range(3000)],
    )
    version = [a for a in alarms if a.slice == "__all__"]
    if reference == "profile":
        assert version
        # labels come 600 s after their predictions; KL(0.2 || 0.05) = 0.13 nats a label
        assert version[0].event_time < T0 + 600 + 300
    else:
        assert not version


def test_the_estimate_alarms_before_any_label_when_predictions_grow_uncertain() -> None:
    """No labels at all: calibrated scores near 0 and 1 (about 5% wrong), then scores near
    0.5 for one country with a fifth of the traffic (about 35% wrong there, 11% in all):
    the version's estimate test fires."""
    model = {
        "name": "m",
        "task": "binary",
        "features": [{"name": "x", "type": "numeric"}],
        "slices": [{"name": "country", "keys": ["country"], "max_values": 3}],
    }
    q = Quality(settings(models=[model], quality={"reference_labels": 500}))
    rng = np.random.default_rng(6)
    n = 20_000
    confident = np.where(rng.random(n) < 0.5, 0.95, 0.05)
    country = np.where(rng.random(n) < 0.2, "IS", "DE")
    unsure = (country == "IS") & (np.arange(n) >= 10_000)
    scores = np.where(unsure, np.where(rng.random(n) < 0.5, 0.65, 0.35), confident)
    alarms = []
    for start in range(0, n, 1000):
        rows = range(start, start + 1000)
        alarms += q.apply([pred(i, float(scores[i]), str(country[i])) for i in rows], [])
    estimated = [a.event_time for a in alarms if a.detector == "cusum_estimated"]
    assert {a.slice for a in alarms} == {"__all__"}  # the estimate is tested per version
    assert estimated
    assert T0 + 10_000 < min(estimated) < T0 + 10_000 + 1000  # after the change, soon
    counted = q.snapshot().concept_alarms
    assert counted[("m", "v1", "__all__", "cusum_estimated")] == len(estimated)
    for a in alarms:  # each names the prediction that tipped the test
        assert a.prediction_id == f"p{a.offset}"
        assert a.event_time == T0 + a.offset
    # the draws are errors at the estimated rate: the reference (the first 500) is 5% wrong,
    # plus its margin of a standard error
    (detector,) = q.concept.estimate_detectors.values()
    assert detector.cusum is not None
    assert 0.04 < detector.cusum.p0 < 0.08


def test_a_regression_model_whose_errors_grow_raises_a_budgeted_alarm() -> None:
    model = {"name": "eta", "task": "regression", "features": [{"name": "x", "type": "numeric"}]}
    q = Quality(settings(models=[model], quality={"reference_labels": 1000}))
    rng = np.random.default_rng(3)
    n = 6000
    error = rng.normal(0.0, np.where(np.arange(n) < 3000, 1.0, 2.0))  # twice as large
    alarms = q.apply(
        [
            Prediction(f"r{i}", "eta", "1", T0 + i, {"x": 1.0}, 10.0, None, None, {}, 0, i)
            for i in range(n)
        ],
        [Label(f"r{i}", 10.0 + float(error[i]), T0 + i, 0, i) for i in range(n)],
    )
    assert {a.detector for a in alarms} == {"cusum"}
    assert T0 + 3000 < min(a.event_time for a in alarms) < T0 + 3300


def test_a_quality_alarm_names_its_label_even_when_the_label_came_first() -> None:
    """Labels that wait for their prediction in the early hold keep their own coordinates:
    the alarm points at the label's partition and offset, and at its prediction's id."""
    q = Quality(settings(quality={"reference_labels": 200}))
    rng = np.random.default_rng(8)
    n = 1200
    wrong = rng.random(n) < np.where(np.arange(n) < 600, 0.05, 0.6)
    alarms = []
    for start in range(0, n, 100):
        rows = range(start, start + 100)
        labels = [Label(f"p{i}", float(not wrong[i]), T0 + i, 0, 50_000 + i) for i in rows]
        alarms += q.apply([], labels)  # every label first: held
        alarms += q.apply([pred(i, 0.9) for i in rows], [])
    fired = [a for a in alarms if a.detector == "cusum" and a.slice == "__all__"]
    assert fired
    for a in fired:
        assert a.offset == 50_000 + int(a.prediction_id[1:])  # the label's, not the prediction's
        assert a.offset - 50_000 >= 600  # after the change


@pytest.mark.parametrize("reference", ["profile", "first labels"])
def test_a_reference_from_the_stream_grows_and_a_profiles_does_not(reference: str) -> None:
    """References of 200 labels, grown to at most 1,000: after 3,000 labels at 5% errors
    the version's (without a profile) and each country's have grown from their own labels;
    a profile's stays as it was measured."""
    profiles = labelled_profile() if reference == "profile" else {}
    quality = {"reference_labels": 200, "reference_labels_max": 1000}
    q = Quality(settings(quality=quality), profiles)
    rng = np.random.default_rng(8)
    wrong = rng.random(3000) < 0.05
    country = np.where(rng.random(3000) < 0.5, "DE", "FR")
    for start in range(0, 3000, 500):
        rows = range(start, start + 500)
        q.apply(
            [pred(i, 0.9, str(country[i])) for i in rows],
            [lab(i, 0.0 if wrong[i] else 1.0) for i in rows],
        )
    grown = {q.keys.names[code][2]: d.seen for code, d in q.concept.detectors.items()}
    assert set(grown) >= {"__all__", "country=DE", "country=FR"}
    assert all(200 < seen <= 1000 for name, seen in grown.items() if name != "__all__")
    assert grown["__all__"] == (10_000 if reference == "profile" else 1000)
