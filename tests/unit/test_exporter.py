from __future__ import annotations

import base64
import re
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamwatch.app import build
from streamwatch.config import parse_settings
from streamwatch.demo import run_in_memory
from streamwatch.endpoint import serve
from streamwatch.exporter import Health
from streamwatch.simulation import DEMO_CONFIG, Scenario
from tests.conftest import ROOT


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_health_endpoints_follow_the_worker() -> None:
    health = Health(stall_seconds=60)
    server = serve(CollectorRegistry(), "127.0.0.1", 0, health)
    port = server.server_address[1]
    try:
        assert _get(port, "/healthz") == (200, "ok\n")
        assert _get(port, "/readyz") == (503, "no partitions assigned\n")
        health.assigned = 2
        assert _get(port, "/readyz") == (200, "consuming 2 partition(s)\n")
        health.last_poll -= 120
        status, body = _get(port, "/readyz")
        assert status == 503
        assert "stalled" in body
        assert _get(port, "/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_demo_run_exports_exact_counts_and_the_alarm() -> None:
    settings = parse_settings(DEMO_CONFIG)
    app = build(settings)
    scenario = Scenario(events=20_000, drift_at=12_000)
    result = run_in_memory(app, scenario)
    r = app.registry
    events = r.get_sample_value(
        "streamwatch_events_total", {"topic": "demo-predictions", "model": "fraud-detector"}
    )
    assert events == 20_000
    assert (
        r.get_sample_value("streamwatch_events_total", {"topic": "demo-labels", "model": ""})
        == 20_000
    )
    invalid = sum(result.invalid.values())
    assert invalid == 20
    alarms = r.get_sample_value(
        "streamwatch_drift_alarms_total",
        {
            "model": "fraud-detector",
            "model_version": "2026.11.1",
            "slice": "__all__",
            "signal": "feature",
            "feature": "amount",
            "detector": "cusum_mean",
        },
    )
    assert alarms is not None
    assert alarms >= 1
    # The drifted feature is caught within a few hundred events of the drift. (Other
    # signals may raise false alarms at the budgeted rate: bench/detection measures it.)
    first_on_amount = min(a[5] for a in result.alarms if a[3] == "amount")
    assert 12_000 <= first_on_amount < 12_500
    assert (
        r.get_sample_value(
            "streamwatch_model_info",
            {
                "model": "fraud-detector",
                "model_version": "2026.11.1",
                "reference": "warmup",
                "run_id": "",
                "data_snapshot": "",
                "code_revision": "",
                "environment": "",
            },
        )
        == 1
    )
    # every prediction of the version, warm-up included: the gate's evidence
    predictions = r.get_sample_value(
        "streamwatch_predictions_total", {"model": "fraud-detector", "model_version": "2026.11.1"}
    )
    events = r.get_sample_value(
        "streamwatch_events_total", {"topic": "demo-predictions", "model": "fraud-detector"}
    )
    assert predictions == events


def test_metrics_documented_are_the_metrics_registered() -> None:
    app = build(parse_settings(DEMO_CONFIG))
    run_in_memory(app, Scenario(events=8000, drift_at=7000))
    names = {m.name + ("_total" if m.type == "counter" else "") for m in app.registry.collect()}
    documented = set(
        re.findall(
            r"^\| `(streamwatch_[a-z_]+)`",
            (ROOT / "docs/metrics.md").read_text(),
            flags=re.MULTILINE,
        )
    )
    assert names == documented


def test_drift_per_slice_value_in_the_worker_pipeline() -> None:
    """With ``drift: true`` on a slice, the worker's monitor follows the values the quality
    side tracks, and the exported drift series carry them in ``slice``."""
    config: dict[str, Any] = {**DEMO_CONFIG}
    model = {**config["models"][0]}
    model["slices"] = [{"name": "country", "keys": ["country"], "max_values": 3, "drift": True}]
    model["reference"] = {"warmup_events": 1000}
    config["models"] = [model]
    app = build(parse_settings(config))
    run_in_memory(app, Scenario(events=12_000, drift_at=8000))
    samples = [s for m in app.registry.collect() for s in m.samples]
    warmed = {
        s.labels["slice"]
        for s in samples
        if s.name == "streamwatch_reference_warmup_ratio" and s.value == 1.0
    }
    tracked = app.pipeline.quality.slicers["fraud-detector"].tracked[0]
    assert len(tracked) == 3
    assert warmed == {"__all__", *tracked}
    alarmed = {
        s.labels["slice"]
        for s in samples
        if s.name == "streamwatch_drift_alarms_total" and s.labels["feature"] == "amount"
    }
    assert alarmed & set(tracked)  # the shift in amount is seen within slice values too


def test_idle_connections_are_closed_and_capped() -> None:
    import socket
    import time

    server = serve(CollectorRegistry(), "127.0.0.1", 0, idle_timeout=0.5, max_connections=2)
    port = server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        time.sleep(0.2)  # let the server accept both
        with socket.create_connection(("127.0.0.1", port)) as extra:
            extra.settimeout(5)
            assert extra.recv(1) == b""  # refused at accept: no slot
        for s in idle:
            s.settimeout(5)
            assert s.recv(1) == b""  # closed by the server after the idle timeout
        assert _get(port, "/healthz") == (200, "ok\n")  # slots are free again
    finally:
        for s in idle:
            s.close()
        server.shutdown()
        server.server_close()


def test_tls_and_basic_auth_from_a_web_config(tmp_path: Any) -> None:
    import ssl
    import subprocess

    import bcrypt

    from streamwatch.config import load_web_config

    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    hashed = bcrypt.hashpw(b"scrape-me", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yaml"
    web.write_text(
        "tls_server_config: {cert_file: cert.pem, key_file: key.pem}\n"
        f"basic_auth_users: {{prometheus: '{hashed}'}}\n"
    )
    server = serve(CollectorRegistry(), "127.0.0.1", 0, web=load_web_config(web))
    port = server.server_address[1]
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    context.check_hostname = False

    def get(path: str, password: str | None) -> int:
        request = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
        if password is not None:
            token = base64.b64encode(f"prometheus:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as error:
            return error.code

    try:
        assert get("/metrics", None) == 401
        assert get("/metrics", "wrong") == 401
        assert get("/metrics", "scrape-me") == 200
        assert get("/healthz", None) == 200  # probes need no credentials
        with pytest.raises(ConnectionError):  # plain HTTP is not served
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
