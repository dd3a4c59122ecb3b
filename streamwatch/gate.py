"""The gate: may a deployment promote a candidate model version? It asks Prometheus.

A pre-release quality gate judges a model on held-out data; this one asks the production
monitor how the candidate does on live traffic (canary or shadow), beside the baseline
version on the same traffic, or beside its own reference profile. Each check is one PromQL
expression over the window, and two conditions on its value::

    check           value (over the window)                      pass            fail
    traffic         candidate predictions                        >= min_events   (never: wait)
    drift_alarms    candidate drift alarms, any signal or slice  <= max_alarms   > max_alarms
    invalid_ratio   rejected share of the predictions topic      <= max_ratio    > max_ratio
    label_coverage  labelled share of the candidate's predictions >= min_coverage (never: wait)
    quality         candidate score minus what it is compared to >= -max_drop    < -max_drop

A value that meets neither condition (NaN: no data yet) is "wait". The verdict is "fail" if
any check fails, else "wait" if any waits, else "pass"; exit codes 1, 2 and 0 (3: cannot
ask). These are Argo Rollouts' successful, failed and inconclusive measurements, and
:func:`analysis_template` writes the same expressions and conditions as an AnalysisTemplate:
one source for both.

The quality score is realized (from the labelled-prediction counters) once the candidate
has ``gate.min_labels`` labels in the window, estimated before that (the mean of its
``streamwatch_estimated_score`` gauges). It is compared with the baseline version's score
(``--baseline``), else the candidate's reference score (``baseline --metric``), else the
model's objective (``models[].objectives``). Lower-is-better scores (log loss, Brier, MAE)
flip the sign of the rule.
"""

from __future__ import annotations

import json
import math
import operator
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import yaml

from streamwatch import __version__
from streamwatch.config import ModelSpec, Settings
from streamwatch.errors import StreamwatchError

Verdict = Literal["pass", "fail", "wait"]
EXIT_CODES: dict[Verdict, int] = {"pass": 0, "fail": 1, "wait": 2}
CANNOT_ASK = 3
LOWER_IS_BETTER = {"log_loss", "brier", "mae"}
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


class GateError(StreamwatchError):
    """Raised when the gate cannot ask: Prometheus unreachable, or a model it does not know."""


@dataclass(frozen=True)
class Condition:
    """``value OP threshold``, as Python evaluates it and as Argo's ``result[0] OP t``."""

    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)  # NaN: never

    def argo(self) -> str:
        return f"result[0] {self.op} {self.threshold:g}"

    def __str__(self) -> str:
        return f"{self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Check:
    name: str
    meaning: str
    query: str
    success: Condition
    failure: Condition  # a threshold no value reaches, for checks that can only wait

    def verdict(self, value: float) -> Verdict:
        if self.success.holds(value):
            return "pass"
        return "fail" if self.failure.holds(value) else "wait"


NEVER = Condition("<", -1.0)  # values of "wait" checks are counts and ratios: never below 0


def _label(value: str) -> str:
    """A PromQL string literal's content (Argo's ``{{args.x}}`` placeholders pass through)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def score_of(settings: Settings, spec: ModelSpec) -> str:
    """The score the gate judges for a model: the config's, or its task's default."""
    score = settings.gate.score or ("mae" if spec.task == "regression" else "accuracy")
    allowed = {
        "binary": {"accuracy", "log_loss", "brier"},
        "multiclass": {"accuracy"},
        "regression": {"mae"},
    }[spec.task]
    if score not in allowed:
        raise GateError(
            f"gate.score {score!r} does not apply to {spec.task} model {spec.name!r}: "
            f"use one of {sorted(allowed)}"
        )
    return score


class Queries:
    """The PromQL of every check, for one model, candidate, baseline and window. The values
    may be Argo placeholders: the AnalysisTemplate is rendered from these same strings."""

    def __init__(
        self, settings: Settings, spec: ModelSpec, candidate: str, baseline: str, window: str
    ) -> None:
        self.settings = settings
        self.score = score_of(settings, spec)
        self.model = _label(spec.name)
        self.candidate, self.baseline = _label(candidate), _label(baseline)
        self.window = window
        self.topic = _label(settings.topics.predictions)

    def _version(self, version: str, extra: str = "") -> str:
        return f'model="{self.model}", model_version="{version}"{extra}'

    def _increase(self, metric: str, selector: str) -> str:
        return f"sum(increase({metric}{{{selector}}}[{self.window}]))"

    def predictions(self, version: str) -> str:
        return self._increase("streamwatch_predictions_total", self._version(version))

    def labelled(self, version: str) -> str:
        return self._increase(
            "streamwatch_labelled_events_total", self._version(version, ', slice="__all__"')
        )

    def realized(self, version: str) -> str:
        """The score on the window's labelled predictions, when there are enough of them."""
        whole = ', slice="__all__"'
        numerator = {
            "accuracy": ("streamwatch_labelled_correct_total", whole),
            "log_loss": ("streamwatch_loss_sum_total", f'{whole}, loss="log_loss"'),
            "brier": ("streamwatch_loss_sum_total", f'{whole}, loss="brier"'),
            "mae": ("streamwatch_regression_error_sum_total", f'{whole}, error="abs"'),
        }[self.score]
        ratio = f"{self._increase(numerator[0], self._version(version, numerator[1]))} / " + (
            self.labelled(version)
        )
        return f"(({ratio}) and on() ({self.labelled(version)} >= {self.settings.gate.min_labels}))"

    def estimated(self, version: str) -> str:
        selector = self._version(version, f', slice="__all__", score="{self.score}"')
        return f"avg(streamwatch_estimated_score{{{selector}}})"

    def quality_of(self, version: str) -> str:
        return f"({self.realized(version)} or on() {self.estimated(version)})"

    def reference(self) -> str:
        selector = self._version(self.candidate, f', score="{self.score}"')
        return f"max(streamwatch_reference_score{{{selector}}})"

    def objective(self) -> str:
        return f'max(streamwatch_quality_objective{{model="{self.model}", score="{self.score}"}})'

    def quality(self) -> str:
        """Candidate minus comparator, like with like: realized minus the baseline's realized
        score, else estimate minus estimate, else the candidate's score minus its reference
        or the objective. Only once the candidate has its traffic (few events: wait)."""
        c, b = self.candidate, self.baseline
        difference = (
            f"({self.realized(c)} - on() {self.realized(b)}) "
            f"or on() ({self.estimated(c)} - on() {self.estimated(b)}) "
            f"or on() ({self.quality_of(c)} - on() ({self.reference()} or on() {self.objective()}))"
        )
        evidence = f"{self.predictions(c)} >= {self.settings.gate.min_events}"
        return f"(({difference}) and on() ({evidence})) or vector(NaN)"

    def checks(self) -> list[Check]:
        gate = self.settings.gate
        drop = gate.max_score_drop
        if self.score in LOWER_IS_BETTER:
            success, failure = Condition("<=", drop), Condition(">", drop)
        else:
            success, failure = Condition(">=", -drop), Condition("<", -drop)
        topic = f'topic="{self.topic}"'
        rejected = self._increase("streamwatch_events_invalid_total", topic)
        accepted = self._increase("streamwatch_events_total", topic)
        return [
            Check(
                "traffic",
                "candidate predictions in the window",
                f"{self.predictions(self.candidate)} or vector(0)",
                Condition(">=", gate.min_events),
                NEVER,
            ),
            Check(
                "drift_alarms",
                "candidate drift alarms in the window (any signal, any slice)",
                self._increase("streamwatch_drift_alarms_total", self._version(self.candidate))
                + " or vector(0)",
                Condition("<=", gate.max_drift_alarms),
                Condition(">", gate.max_drift_alarms),
            ),
            Check(
                "invalid_ratio",
                "rejected share of the predictions topic (all versions)",
                f"({rejected} / ({rejected} + {accepted})) or vector(NaN)",
                Condition("<=", gate.max_invalid_ratio),
                Condition(">", gate.max_invalid_ratio),
            ),
            Check(
                "label_coverage",
                "labelled share of the candidate's predictions in the window",
                f"clamp_max(({self.labelled(self.candidate)} or vector(0)) / "
                f"{self.predictions(self.candidate)}, 1) or vector(NaN)",
                Condition(">=", gate.min_label_coverage),
                NEVER,
            ),
            Check(
                "quality",
                f"candidate {self.score} minus the baseline's (or reference's, or objective)",
                self.quality(),
                success,
                failure,
            ),
        ]


@dataclass
class Result:
    name: str
    meaning: str
    value: float
    rule: str
    verdict: Verdict
    query: str
    note: str = ""


@dataclass
class Decision:
    """The gate's answer, with what it decided on: the promotion record."""

    model: str
    candidate: str
    baseline: str
    window: str
    prometheus: str
    verdict: Verdict
    exit_code: int
    checks: list[Result]
    lineage: dict[str, dict[str, str]] = field(default_factory=dict)  # version -> labels
    evaluated_at: float = 0.0  # the instant every query was evaluated at (Unix seconds)
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    streamwatch_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        for check in body["checks"]:
            check["value"] = None if math.isnan(check["value"]) else check["value"]
        return body

    def table(self) -> str:
        against = f" vs {self.baseline} (baseline)" if self.baseline else ""
        lines = [
            f"streamwatch gate: {self.model} {self.candidate} (candidate){against}, "
            f"last {self.window}, from {self.prometheus}",
            "",
            f"{'check':<15} {'value':>12}  {'rule':<12} {'verdict':<7} note",
        ]
        for c in self.checks:
            value = "n/a" if math.isnan(c.value) else f"{c.value:,.4g}"
            lines.append(f"{c.name:<15} {value:>12}  {c.rule:<12} {c.verdict:<7} {c.note}")
        action = {"pass": "promote", "fail": "hold or roll back", "wait": "ask again later"}
        lines += ["", f"verdict: {self.verdict} (exit {self.exit_code}): {action[self.verdict]}"]
        return "\n".join(lines)


class Prometheus:
    """Instant queries against Prometheus's HTTP API."""

    def __init__(self, url: str, timeout: float = 10.0, at: float | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.at = at  # evaluation time of every query (None: Prometheus's now)

    def query(self, promql: str) -> list[dict[str, Any]]:
        params: dict[str, str] = {"query": promql}
        if self.at is not None:
            params["time"] = f"{self.at:.3f}"
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(address, timeout=self.timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise GateError(
                f"Prometheus at {self.url} refused a query ({error}): {detail}"
            ) from None
        except (OSError, ValueError) as error:
            raise GateError(
                f"cannot reach Prometheus at {self.url} ({error}): check --prometheus"
            ) from None
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float:
        """The first sample's value; NaN when the result is empty."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else math.nan


def decide(
    settings: Settings,
    prometheus: Prometheus,
    model: str,
    candidate: str,
    baseline: str = "",
    window: str = "",
) -> Decision:
    spec = settings.model(model)
    if spec is None:
        names = ", ".join(m.name for m in settings.models)
        raise GateError(f"model {model!r} is not in the config (it has: {names})")
    window = window or settings.gate.window
    # Every check at one instant: a decision on one consistent view, which the promotion
    # record names (increase() over a window drifts as the window slides).
    if prometheus.at is None:
        prometheus = Prometheus(prometheus.url, prometheus.timeout, round(time.time(), 3))
    known = f'count(streamwatch_predictions_total{{model="{_label(model)}"}})'
    if not prometheus.query(known):
        raise GateError(
            f"Prometheus at {prometheus.url} has no series of model {model!r}: does it "
            "scrape the streamwatch workers, and do they see the model's predictions?"
        )
    queries = Queries(settings, spec, candidate, baseline, window)
    results = []
    for check in queries.checks():
        value = prometheus.value(check.query)
        results.append(
            Result(
                check.name,
                check.meaning,
                value,
                str(check.success),
                check.verdict(value),
                check.query,
            )
        )
    results[-1].note = _quality_note(prometheus, queries, baseline)
    verdicts = {r.verdict for r in results}
    verdict: Verdict = "fail" if "fail" in verdicts else "wait" if "wait" in verdicts else "pass"
    lineage = {}
    for version in filter(None, (candidate, baseline)):
        selector = f'model="{_label(model)}", model_version="{_label(version)}"'
        info = prometheus.query(f"streamwatch_model_info{{{selector}}}")
        if info:
            labels = dict(info[0]["metric"])
            lineage[version] = {k: v for k, v in labels.items() if k not in ("job", "instance")}
    return Decision(
        model,
        candidate,
        baseline,
        window,
        prometheus.url,
        verdict,
        EXIT_CODES[verdict],
        results,
        lineage,
        prometheus.at or 0.0,
    )


def _quality_note(prometheus: Prometheus, queries: Queries, baseline: str) -> str:
    """What the quality check compared, in words, in the order its query tries."""
    c, b, score = queries.candidate, queries.baseline, queries.score
    pairs = [("on labels", queries.realized), ("estimated", queries.estimated)]
    if baseline:
        for kind, promql in pairs:
            mine, theirs = prometheus.value(promql(c)), prometheus.value(promql(b))
            if not (math.isnan(mine) or math.isnan(theirs)):
                return f"{score} {mine:.4g} vs baseline {theirs:.4g}, {kind}"
    found = [(kind, prometheus.value(promql(c))) for kind, promql in pairs]
    scored = [(kind, value) for kind, value in found if not math.isnan(value)]
    if not scored:
        return f"no {score} yet (fewer than gate.min_labels labels, no estimate)"
    kind, mine = scored[0]
    for what, query in (("reference", queries.reference()), ("objective", queries.objective())):
        value = prometheus.value(query)
        if not math.isnan(value):
            return f"{score} {mine:.4g} {kind} vs {what} {value:.4g}"
    return f"{score} {mine:.4g} {kind}; nothing to compare with (--baseline, --metric, objectives)"


def analysis_template(settings: Settings, prometheus_address: str) -> str:
    """An Argo Rollouts AnalysisTemplate with the gate's checks, for every model of the
    config (the model is an argument; the score follows the first model's task)."""
    spec = settings.models[0]
    args = {name: "{{args." + name + "}}" for name in ("model", "candidate", "baseline", "window")}
    model_spec = spec.model_copy(update={"name": args["model"]})
    queries = Queries(settings, model_spec, args["candidate"], args["baseline"], args["window"])
    metrics = [
        {
            "name": check.name.replace("_", "-"),
            "successCondition": check.success.argo(),
            "failureCondition": check.failure.argo(),
            "provider": {
                "prometheus": {"address": prometheus_address, "query": check.query},
            },
        }
        for check in queries.checks()
    ]
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "streamwatch-gate"},
        "spec": {
            "args": [
                {"name": "model", "value": spec.name},
                {"name": "candidate"},
                {"name": "baseline", "value": ""},
                {"name": "window", "value": settings.gate.window},
            ],
            "metrics": metrics,
        },
    }
    header = (
        "# Generated by `streamwatch analysis-template`: the checks of `streamwatch gate`,\n"
        "# same PromQL, same thresholds (the config's gate: section). Do not edit; regenerate.\n"
    )
    return header + yaml.safe_dump(template, sort_keys=False, width=1000)
