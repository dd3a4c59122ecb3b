"""Real Prometheus and Alertmanager for the integration tests (Debian packages), running the
shipped configuration pointed at a test's worker, and a webhook that receives the pages."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, free_port

DEPLOY = ROOT / "deploy"


class Webhook:
    """Alertmanager's receivers, both pointed here: every alert notified, with its arrival."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, dict[str, Any]]] = []  # (time, path, alert)
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                for alert in json.loads(body)["alerts"]:
                    webhook.received.append((time.monotonic(), self.path, alert))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pages(self, **labels: str) -> list[tuple[float, str, dict[str, Any]]]:
        return [
            r
            for r in self.received
            if r[2]["status"] == "firing"
            and all(r[2]["labels"].get(k) == v for k, v in labels.items())
        ]


def scaled_rules(target: Path) -> None:
    """The shipped rules, each ``for:`` hold 60 times shorter (minutes become seconds)."""
    rules = yaml.safe_load((DEPLOY / "prometheus/rules/streamwatch.rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                number, unit = re.fullmatch(r"(\d+)([smh])", rule["for"]).groups()  # type: ignore[union-attr]
                seconds = int(number) * {"s": 1, "m": 60, "h": 3600}[unit]
                rule["for"] = f"{seconds // 60}s"
    target.write_text(yaml.safe_dump(rules, sort_keys=False))


class Servers:
    def __init__(self, folder: Path, worker_port: int, webhook: Webhook) -> None:
        self.folder = folder
        self.am_port, self.prom_port = free_port(), free_port()
        am = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
        for receiver in am["receivers"]:
            for hook in receiver["webhook_configs"]:
                hook["url"] = f"http://127.0.0.1:{webhook.port}/{receiver['name']}"
        (folder / "alertmanager.yml").write_text(yaml.safe_dump(am))
        scaled_rules(folder / "streamwatch.rules.yml")
        prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
        prom["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        prom["rule_files"] = [str(folder / "streamwatch.rules.yml")]
        prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
            f"127.0.0.1:{self.am_port}"
        ]
        job = prom["scrape_configs"][0]
        job.update(scrape_interval="1s", scrape_timeout="1s")
        job.pop("dns_sd_configs", None)  # compose finds its workers by DNS; here, one port
        job["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
        (folder / "prometheus.yml").write_text(yaml.safe_dump(prom))
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> Servers:
        for tool in ("prometheus", "prometheus-alertmanager"):  # make test installs them
            assert shutil.which(tool), f"{tool}: install the Debian package (make alerting)"
        f = self.folder
        commands = [
            [
                "prometheus-alertmanager",
                f"--config.file={f / 'alertmanager.yml'}",
                f"--storage.path={f / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.am_port}",
                "--cluster.listen-address=",
            ],
            [
                "prometheus",
                f"--config.file={f / 'prometheus.yml'}",
                f"--storage.tsdb.path={f / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{self.prom_port}",
            ],
        ]
        for command, log in zip(commands, ("alertmanager.log", "prometheus.log"), strict=True):
            with (f / log).open("wb") as out:
                self.processes.append(
                    subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
                )
        wait(lambda: get(self.prom_port, "/-/ready") is not None, 60, "Prometheus")
        wait(lambda: get(self.am_port, "/-/ready") is not None, 60, "Alertmanager")
        return self

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = get(self.prom_port, "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert body is not None
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        body = get(self.prom_port, "/api/v1/alerts")
        assert body is not None
        alerts: list[dict[str, Any]] = json.loads(body)["data"]["alerts"]
        return alerts

    def alertmanager_alerts(self) -> list[dict[str, Any]]:
        body = get(self.am_port, "/api/v2/alerts")
        assert body is not None
        alerts: list[dict[str, Any]] = json.loads(body)
        return alerts

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=30)


def get(port: int, path: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            body: bytes = r.read()
            return body
    except OSError:
        return None


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")
