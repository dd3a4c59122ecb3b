#!/usr/bin/env python3
"""Provision and run a single-node Apache Kafka (KRaft) broker without Docker.

Kafka's jars come from Maven Central through ``mvn`` into a cache folder outside the
repository (``$STREAMWATCH_KAFKA_CACHE``, default ``~/.cache/streamwatch/kafka-<version>``);
a second run reuses the cache. The broker runs with the machine's Java 17 as a combined
broker+controller, with its data and logs in a temporary folder.

Usage::

    python3 scripts/kafka_local.py fetch
    python3 scripts/kafka_local.py start --port 9092 --data-dir /tmp/sw-kafka   # runs until Ctrl+C

Given the same ``--data-dir`` again, ``start`` reuses its topics and offsets.

The test suite imports :class:`LocalKafka` from this file (stdlib only, on purpose: it must
run before the project's virtualenv exists).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamwatch</groupId><artifactId>local-kafka</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """<Configuration status="warn">
  <Appenders><Console name="out" target="SYSTEM_OUT">
    <PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="warn"><AppenderRef ref="out"/></Root>
    <Logger name="kafka.server.KafkaRaftServer" level="info"/></Loggers>
</Configuration>
"""


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "streamwatch" / f"kafka-{KAFKA_VERSION}"
    return Path(os.environ.get("STREAMWATCH_KAFKA_CACHE", default))


def fetch(quiet: bool = False) -> Path:
    """Download Kafka and its runtime dependencies with mvn (no-op when cached)."""
    libs = cache_dir() / "libs"
    marker = cache_dir() / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise SystemExit("mvn not found: install Maven (apt-get install maven) to fetch Kafka")
    cache_dir().mkdir(parents=True, exist_ok=True)
    pom = cache_dir() / "pom.xml"
    pom.write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
    if not quiet:
        print(
            f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {libs}", file=sys.stderr
        )
    subprocess.run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        check=True,
    )
    (cache_dir() / "log4j2.xml").write_text(_LOG4J2)
    marker.write_text(KAFKA_VERSION)
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalKafka:
    """One KRaft broker+controller on 127.0.0.1; a context manager that stops it on exit."""

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        controller_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="streamwatch-kafka-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _java(self, *args: str) -> list[str]:
        libs = fetch(quiet=True)
        return [
            "java",
            "-Xms256m",
            "-Xmx768m",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={cache_dir() / 'log4j2.xml'}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def start(self, timeout: float = 60.0) -> LocalKafka:
        """Start the broker; a data folder that holds a formatted log is reused as it is
        (its topics and offsets survive a restart), an empty or new one is formatted."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "data" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            subprocess.run(
                # "--cluster-id=ID": an id may start with "-", which a separate argument
                # would turn into an option
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(config),
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        with (self.data_dir / "kafka.log").open("wb") as log:  # the child keeps its own fd
            self.process = subprocess.Popen(
                self._java("kafka.Kafka", str(config)), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Kafka exited early; see {self.data_dir / 'kafka.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"Kafka did not listen on port {self.port} within {timeout:.0f}s")

    def halt(self, kill: bool = False) -> None:
        """Stop the process (SIGTERM, or SIGKILL with ``kill``), keeping the data: a later
        :meth:`start` brings the same broker back on the same ports."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        """Stop the broker; a temporary data folder of its own is removed."""
        self.halt()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download Kafka jars with mvn into the cache (no-op when cached)")
    start = sub.add_parser(
        "start", help="start a broker and keep it running until Ctrl+C or SIGTERM"
    )
    start.add_argument("--port", type=int, default=9092, help="client port (default 9092)")
    start.add_argument(
        "--data-dir",
        type=Path,
        help="data folder, created if missing and reused as it is on the next start "
        "(default: a new temporary folder, removed at exit)",
    )
    args = parser.parse_args()
    if args.command == "fetch":
        print(fetch())
        return
    # a fixed controller port, so that the same data folder restarts with the same quorum
    broker = LocalKafka(args.port, args.data_dir, controller_port=args.port + 1).start()
    print(
        f"Kafka {KAFKA_VERSION} listening on {broker.bootstrap_servers} "
        f"(data in {broker.data_dir}); Ctrl+C stops it",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        assert broker.process is not None
        broker.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
