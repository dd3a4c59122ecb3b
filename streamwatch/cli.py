"""The ``streamwatch`` command: run, check-config, baseline, replay, gate, demo."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

from streamwatch import __version__
from streamwatch.config import Settings, load_settings, parse_settings
from streamwatch.errors import ConfigError, ConfigProblem, StreamwatchError

EPILOG = """\
examples:
  streamwatch demo                          simulated stream, no broker needed
  streamwatch baseline --config c.yaml --data train.csv --model fraud --model-version 7 \\
      --out fraud-7.profile.json            reference profile from training data
  streamwatch replay --config c.yaml --predictions day.jsonl --out backtest/
                                            when would we have been paged?
  streamwatch demo --metrics-port 9308      ... and serve /metrics while it runs
  streamwatch check-config streamwatch.yaml report every problem in a config
  streamwatch run --config streamwatch.yaml consume from Kafka and serve /metrics
  streamwatch gate --config c.yaml --prometheus http://prometheus:9090 --model fraud \
      --candidate 8 --baseline 7           may CD promote version 8? exit 0/1/2/3

Environment variables override the file: STREAMWATCH_KAFKA__BOOTSTRAP_SERVERS=host:9092.
Docs: docs/configuration.md, docs/metrics.md.
"""


def _instant(text: str) -> float:
    """A Unix time in seconds for ``gate --at`` (a finite number, not before 1970)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Unix time in seconds")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with ``usage_exit`` (argparse's is 2)."""

    def __init__(self, *args: object, usage_exit: int = 2, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.usage_exit = usage_exit

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_exit, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="streamwatch",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Watch ML models in production: drift and data quality from Kafka, "
        "exported to Prometheus.",
    )
    parser.add_argument("--version", action="version", version=f"streamwatch {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="default: INFO",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    run = sub.add_parser(
        "run",
        help="run a consumer-group worker on Kafka",
        description="Consume the predictions and labels topics, dead-letter "
        "bad messages, and serve /metrics, /healthz and /readyz. A broker outage never "
        "ends it: /readyz says what is wrong and it resumes by itself. SIGTERM or Ctrl+C "
        "finishes the batch, commits within worker.shutdown_grace_seconds (or logs what a "
        "restart will read again) and exits 0; a start-up failure is one message and exit 2.",
    )
    run.add_argument("--config", required=True, type=Path, help="YAML config file")

    check = sub.add_parser(
        "check-config",
        help="validate a config file and list every problem",
        description="Exit 0 if the config is valid (librdkafka checks kafka.properties "
        "too, without contacting a broker); otherwise print every problem with its field "
        "path and a fix, and exit 2.",
    )
    check.add_argument("config", type=Path, help="YAML config file")

    base = sub.add_parser(
        "baseline",
        help="build a model version's reference profile from data",
        description="Profile training or validation data (JSONL, CSV; Parquet with the "
        "'parquet' extra) into the reference a model version is judged against, with its "
        "lineage. List the file under models[].reference.profiles.",
    )
    base.add_argument("--config", required=True, type=Path, help="YAML config file")
    base.add_argument("--data", required=True, type=Path, help="rows: .jsonl, .csv, .parquet")
    base.add_argument("--model", required=True, help="model name, as in the config")
    base.add_argument("--model-version", required=True, help="the version this data trained")
    base.add_argument("--run-id", default="", help="training run id (e.g. from MLflow)")
    base.add_argument(
        "--data-snapshot", default="", help="data snapshot id (default: the file's SHA-256)"
    )
    base.add_argument("--code-revision", default="", help="code revision of the training")
    base.add_argument(
        "--image",
        default="",
        help="digest of the training image (default: record this Python and its ML packages)",
    )
    base.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=_metric,
        help="a training/validation score that justified the model, e.g. accuracy=0.95 "
        "(repeatable; exported as streamwatch_reference_score, the gate's comparison "
        "without --baseline)",
    )
    base.add_argument("--out", required=True, type=Path, help="profile file to write")

    replay = sub.add_parser(
        "replay",
        help="run the engine over recorded JSONL files (backtest a config)",
        description="Run recorded messages (one JSON value per line, each file one partition "
        "in its order) through the worker's own loop: the same decoding, rejections, event "
        "order and engine. Records more out of order than event_time.reorder_seconds are "
        "applied late, as live, and counted. Writes alarms.json and timeline.csv.",
    )
    replay.add_argument("--config", required=True, type=Path, help="YAML config file")
    replay.add_argument("--predictions", required=True, type=Path, help="predictions JSONL")
    replay.add_argument(
        "--labels",
        type=Path,
        help="labels JSONL (joined to their predictions: quality scores and alarms)",
    )
    replay.add_argument("--out", required=True, type=Path, help="output folder")
    replay.add_argument(
        "--profile",
        type=Path,
        action="append",
        default=[],
        help="a reference profile to use besides the config's (repeatable)",
    )
    replay.add_argument(
        "--every", type=int, default=1000, help="timeline row interval in events (default 1000)"
    )

    gate = sub.add_parser(
        "gate",
        usage_exit=3,  # a usage error is "cannot ask", never 2, which says "wait"
        help="may a deployment promote a candidate model version? (asks Prometheus)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Ask Prometheus how a candidate model version does on live traffic: its "
        "traffic, drift alarms, the topic's invalid ratio, its label coverage and its quality "
        "score (on labels once there are gate.min_labels, estimated before), against the "
        "baseline version on the same traffic, else its reference profile's score, else the "
        "model's objective. Thresholds: the config's gate: section (docs/deploy.md).",
        epilog="exit codes: 0 pass (promote), 1 fail (hold or roll back), 2 wait (not enough "
        "evidence yet), 3 cannot ask (Prometheus unreachable, unknown model, bad config, a "
        "usage error)",
    )
    gate.add_argument("--config", required=True, type=Path, help="YAML config file")
    gate.add_argument(
        "--prometheus", required=True, help="Prometheus URL, e.g. http://prometheus:9090"
    )
    gate.add_argument("--model", required=True, help="model name, as in the config")
    gate.add_argument("--candidate", required=True, help="the model version to promote")
    gate.add_argument("--baseline", default="", help="the version it replaces, on the same traffic")
    gate.add_argument("--window", default="", help="Prometheus range (default: gate.window)")
    gate.add_argument("--output", choices=["table", "json"], default="table")
    gate.add_argument(
        "--at",
        type=_instant,
        metavar="SECONDS",
        help="evaluate every query at this instant (Unix seconds; default: now), e.g. a "
        "promotion record's evaluated_at, to decide again on the same data",
    )
    gate.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="write the verdict, the values it decided on and the versions' lineage as a "
        "JSON promotion record (store it next to the model)",
    )

    template = sub.add_parser(
        "analysis-template",
        help="print the gate's checks as an Argo Rollouts AnalysisTemplate",
        description="The same PromQL and thresholds as `streamwatch gate`, as an Argo "
        "Rollouts AnalysisTemplate (deploy/argo/ holds the one for examples/streamwatch.yaml).",
    )
    template.add_argument("--config", required=True, type=Path, help="YAML config file")
    template.add_argument(
        "--prometheus",
        default="http://prometheus.monitoring.svc:9090",
        help="Prometheus URL the analysis asks (default http://prometheus.monitoring.svc:9090)",
    )

    demo = sub.add_parser(
        "demo",
        help="run the pipeline on a simulated stream with a drift",
        description="A fraud model's stream with a drift injected part way "
        "and late labels, through the same pipeline stages as 'run'.",
    )
    demo.add_argument("--events", type=int, default=60_000, help="predictions (default 60000)")
    demo.add_argument("--drift-at", type=int, help="event index of the drift (default: half)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--metrics-port", type=int, help="serve /metrics on this port while the demo runs"
    )
    demo.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="write the stream to DIR (predictions.jsonl, labels.jsonl, training.csv) "
        "for baseline and replay, instead of running it",
    )
    demo.add_argument(
        "--bootstrap-servers",
        help="produce the stream into this Kafka and consume it with the worker",
    )
    demo.add_argument(
        "--produce-only",
        action="store_true",
        help="with --bootstrap-servers: only produce, at --rate with event times of now, "
        "round after round of --events (each drifting half way) until SIGTERM; for "
        "workers running beside it (the compose stack's demo producer)",
    )
    demo.add_argument(
        "--rate", type=float, default=50.0, help="--produce-only: predictions/s (default 50)"
    )
    demo.add_argument(
        "--config",
        type=Path,
        help="--produce-only: take the broker and topics from this config (the workers')",
    )
    return parser


def _metric(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not sep or not name or number != number:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=NUMBER, e.g. accuracy=0.95")
    return name, number


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        commands = {
            "run": _run,
            "check-config": _check,
            "demo": _demo,
            "baseline": _baseline,
            "replay": _replay,
            "gate": _gate,
            "analysis-template": _analysis_template,
        }
        code = commands[args.command](args)
    except ConfigError as error:
        print(error, file=sys.stderr)
        code = 2
    except StreamwatchError as error:
        print(f"streamwatch: {error}", file=sys.stderr)
        code = 2
    sys.exit(code)


def _load(path: Path) -> Settings:
    """The settings, with librdkafka's verdict on the passthrough properties (a property
    it refuses is a config error in ``check-config`` as in ``run``)."""
    from streamwatch.source import check_properties

    settings = load_settings(path)
    refused = check_properties(settings)
    if refused is not None:
        raise ConfigError(
            str(path),
            [
                ConfigProblem(
                    "kafka.properties",
                    refused,
                    "use a property librdkafka knows (see librdkafka's CONFIGURATION.md)",
                )
            ],
        )
    return settings


def _check(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    models = ", ".join(m.name for m in settings.models)
    print(f"{args.config}: OK ({len(settings.models)} model(s): {models})")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from streamwatch import baseline

    settings = load_settings(args.config)
    profile = baseline.build(
        settings,
        args.data,
        args.model,
        args.model_version,
        args.run_id,
        args.data_snapshot,
        args.code_revision,
        args.image,
        dict(args.metric),
    )
    profile.save(args.out)
    lineage = profile.lineage
    print(
        f"{args.out}: reference of {lineage.model} {lineage.model_version} from "
        f"{lineage.rows:,} rows of {lineage.source} ({lineage.data_snapshot}); "
        f"{len(profile.numeric)} numeric and {len(profile.categorical)} categorical signals"
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from streamwatch import replay
    from streamwatch.app import tune_gc
    from streamwatch.baseline import with_profiles
    from streamwatch.records import ConceptAlarm

    settings = load_settings(args.config)
    if args.profile:
        settings = with_profiles(settings, args.profile)
    args.out.mkdir(parents=True, exist_ok=True)
    tune_gc()  # as a worker: a replay of 200,000 predictions spent 12% of its CPU in the GC
    result = replay.run(
        settings,
        args.predictions,
        args.labels,
        every=args.every,
        timeline=args.out / "timeline.csv",
    )
    replay.write_alarms(result, args.out / "alarms.json")
    rejected = sum(result.rejected.values())
    print(
        f"replayed {result.predictions:,} predictions ({rejected:,} rejected"
        f"{f', {result.labels:,} labels' if args.labels else ''}); "
        f"{len(result.alarms):,} drift alarms"
        f"{f', {len(result.concept_alarms):,} concept drift alarms' if args.labels else ''}"
        f" -> {args.out / 'alarms.json'}, "
        f"{args.out / 'timeline.csv'}"
    )
    if result.out_of_order or result.forced:
        print(
            f"  {result.out_of_order:,} records more out of order than "
            f"event_time.reorder_seconds and {result.forced:,} forced out by "
            f"event_time.max_waiting_events were applied late, as a live worker would"
        )
    first: dict[tuple[str, ...], tuple[int, int]] = {}
    for a in result.alarms:
        where = "" if a.slice == "__all__" else f" in {a.slice}"
        key = (a.model, a.model_version, where, a.signal, a.feature, a.detector)
        first.setdefault(key, (result.event_index[a.offset], a.offset))
    for (model, version, where, kind, feature, detector), (index, line) in first.items():
        print(
            f"  first alarm {model} {version}{where} {kind}={feature} {detector} at event "
            f"{index:,} (line {line:,})"
        )
    concept: dict[tuple[str, ...], ConceptAlarm] = {}
    for c in result.concept_alarms:
        concept.setdefault((c.model, c.model_version, c.slice, c.detector), c)
    for c in concept.values():
        where = "" if c.slice == "__all__" else f" in {c.slice}"
        kind = "prediction" if c.on_predictions else "label"
        print(
            f"  first quality alarm {c.model} {c.model_version}{where} {c.detector} at the "
            f"{kind} for {c.prediction_id} (line {c.offset:,} of the {kind}s)"
        )
    return 0


def _gate(args: argparse.Namespace) -> int:
    from streamwatch.gate import CANNOT_ASK, GateError, Prometheus, decide

    try:
        settings = load_settings(args.config)
        decision = decide(
            settings,
            Prometheus(args.prometheus, at=args.at),
            args.model,
            args.candidate,
            args.baseline,
            args.window,
        )
    except ConfigError as error:
        print(error, file=sys.stderr)
        return CANNOT_ASK
    except GateError as error:
        print(f"streamwatch gate: cannot ask: {error}", file=sys.stderr)
        return CANNOT_ASK
    record = decision.to_json()
    if args.record:
        args.record.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1) if args.output == "json" else decision.table())
    return decision.exit_code


def _analysis_template(args: argparse.Namespace) -> int:
    from streamwatch.gate import analysis_template

    print(analysis_template(load_settings(args.config), args.prometheus), end="")
    return 0


def _stop_on_signals() -> threading.Event:
    """Signal handlers only request a stop; the loop finishes its batch and commits."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _run(args: argparse.Namespace) -> int:
    from streamwatch.app import build, tune_gc
    from streamwatch.config import load_web_config
    from streamwatch.endpoint import serve

    settings = _load(args.config)
    app = build(settings)
    e = settings.exporter
    web = load_web_config(e.web_config_file) if e.web_config_file else None
    try:
        server = serve(
            app.registry,
            e.address,
            e.port,
            app.health,
            web,
            e.idle_timeout_seconds,
            e.max_connections,
        )
    except OSError as error:
        raise StreamwatchError(
            f"cannot serve /metrics on {e.address}:{e.port} ({error.strerror or error}): "
            f"another process uses the port; set exporter.port (or "
            f"STREAMWATCH_EXPORTER__PORT) to a free one"
        ) from None
    logging.getLogger("streamwatch").info(
        "serving /metrics on %s://%s:%d",
        "https" if web and web.tls_server_config else "http",
        e.address,
        server.server_address[1],
    )
    stop = _stop_on_signals()
    worker = app.worker()
    tune_gc()
    closed = worker.run(stop)
    server.shutdown()
    server.server_close()
    if not closed:
        # librdkafka still waits for a coordinator that is not there: leave without it
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from streamwatch.app import build
    from streamwatch.demo import run_in_memory, run_on_kafka, summary
    from streamwatch.endpoint import serve
    from streamwatch.simulation import DEMO_CONFIG, Scenario, record

    settings: Settings = parse_settings(DEMO_CONFIG, "<demo config>")
    if args.bootstrap_servers:
        settings = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(
                    update={
                        "bootstrap_servers": args.bootstrap_servers,
                        "group_id": f"streamwatch-demo-{args.seed}",
                    }
                )
            }
        )
    drift_at = args.drift_at if args.drift_at is not None else args.events // 2
    scenario = Scenario(
        events=args.events,
        drift_at=drift_at,
        seed=args.seed,
        predictions_topic=settings.topics.predictions,
        labels_topic=settings.topics.labels,
    )
    if args.produce_only:
        from streamwatch.demo import produce_live

        if not (args.rate > 0 and args.events > 0):
            raise StreamwatchError("--produce-only needs --rate > 0 and --events > 0")

        if args.config:
            settings = _load(args.config)
        bootstrap = args.bootstrap_servers or settings.kafka.bootstrap_servers
        if not (args.config or args.bootstrap_servers):
            raise StreamwatchError("--produce-only needs --config or --bootstrap-servers")
        produced = produce_live(settings, bootstrap, args.rate, args.events, _stop_on_signals())
        print(f"produced {produced:,} predictions to {settings.topics.predictions}")
        return 0
    if args.config:
        raise StreamwatchError("--config goes with --produce-only (the demo has its own)")
    if args.record:
        counts = record(scenario, args.record)
        for name, n in counts.items():
            print(f"{args.record / name}: {n:,} lines")
        return 0
    app = build(settings)
    if args.metrics_port is not None:
        serve(app.registry, "127.0.0.1", args.metrics_port)
    if args.bootstrap_servers:
        result = run_on_kafka(app, scenario, args.bootstrap_servers)
    else:
        result = run_in_memory(app, scenario)
    print(summary(result, scenario))
    return 0
