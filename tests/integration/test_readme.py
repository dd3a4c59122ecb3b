"""Every command the README shows, run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
COMMANDS = re.findall(r"^\$ (.+)$", README, flags=re.MULTILINE)
CI_COMMAND = "make test"  # runs this very suite: checked through .ci/run instead
BACKTEST = [
    ".venv/bin/streamwatch demo --record demo-data",
    ".venv/bin/streamwatch baseline --config examples/streamwatch.yaml --data "
    "demo-data/training.csv --model fraud-detector --model-version 2026.11.1 --run-id "
    "demo-run-1 --out demo-data/fraud-detector-2026.11.1.json",
    ".venv/bin/streamwatch replay --config examples/streamwatch.yaml --profile "
    "demo-data/fraud-detector-2026.11.1.json --predictions demo-data/predictions.jsonl --out "
    "demo-data/backtest",
]
PARTITIONS = ".venv/bin/python bench/partitions/run.py"
BENCH = ".venv/bin/python bench/detection/run.py"
LABELS_BENCH = ".venv/bin/python bench/labels/run.py"
SOAK = ".venv/bin/python bench/soak/run.py"
THROUGHPUT = ".venv/bin/python bench/throughput/run.py"
PROMTOOL = "promtool test rules deploy/prometheus/tests/streamwatch.test.yml"
DEPLOY_CHECK = ".venv/bin/streamwatch check-config deploy/streamwatch/streamwatch.yaml"
KUSTOMIZE = "kubectl kustomize deploy/kubernetes/overlays/example"
TEMPLATE = ".venv/bin/streamwatch analysis-template --config deploy/streamwatch/streamwatch.yaml"


def test_the_readme_shows_the_commands_this_file_runs() -> None:
    assert [
        "make demo",
        CI_COMMAND,
        "make broker",
        ".venv/bin/streamwatch demo --bootstrap-servers localhost:9092",
        ".venv/bin/streamwatch check-config examples/streamwatch.yaml",
        ".venv/bin/streamwatch run --config examples/streamwatch.yaml",
        "curl -s localhost:9308/metrics",
        *BACKTEST,
        PARTITIONS,
        BENCH,
        LABELS_BENCH,
        SOAK,
        THROUGHPUT,
        PROMTOOL,
        DEPLOY_CHECK,
        KUSTOMIZE,
        TEMPLATE,
    ] == COMMANDS
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [line for line in ci if line and not line.startswith(("#", "set ", "cd "))] == [
        CI_COMMAND
    ]


def _run(command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_make_demo() -> None:
    result = _run("make demo")
    assert result.returncode == 0, result.stderr
    assert "demo-predictions: 60,000 valid events" in result.stdout
    assert "ALARM fraud-detector 2026.11.1 feature=amount" in result.stdout
    # (under `make test`, make prints its own "make[1]: ..." lines around the demo's)
    printed = "\n".join(line for line in result.stdout.splitlines() if not line.startswith("make["))
    summary = printed[printed.index("streamwatch demo:") :].strip()
    assert summary in README, "the README shows another demo output than the demo prints"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_kafka_walkthrough(tmp_path: Path) -> None:
    assert not _port_open(9092), "the README's broker needs port 9092 free"
    assert not _port_open(9308), "the README's worker needs port 9308 free"
    broker = subprocess.Popen(
        "make broker",
        shell=True,
        cwd=ROOT,
        # `make broker` keeps its data between runs; this run starts from an empty folder
        env={**os.environ, "BROKER_DATA": str(tmp_path / "broker-data")},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker: subprocess.Popen[bytes] | None = None
    try:
        _wait(lambda: _port_open(9092), 120, "make broker")
        demo = _run(".venv/bin/streamwatch demo --bootstrap-servers localhost:9092")
        assert demo.returncode == 0, demo.stderr
        assert "demo-predictions: 60,000 valid events" in demo.stdout
        assert "ALARM fraud-detector 2026.11.1 feature=amount" in demo.stdout

        check = _run(".venv/bin/streamwatch check-config examples/streamwatch.yaml")
        assert check.returncode == 0, check.stderr

        worker = subprocess.Popen(
            [".venv/bin/streamwatch", "run", "--config", "examples/streamwatch.yaml"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def consumed_all() -> bool:
            try:
                with urllib.request.urlopen("http://127.0.0.1:9308/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                return False
            return (
                'streamwatch_events_total{model="fraud-detector",topic="demo-predictions"} 60000.0'
            ) in text

        _wait(consumed_all, 120, "the worker to consume the demo stream")
        curl = _run("curl -s localhost:9308/metrics")
        assert curl.returncode == 0
        assert "streamwatch_events_invalid_total" in curl.stdout
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        os.killpg(broker.pid, signal.SIGINT)  # Ctrl+C, as the README says
        try:
            broker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(broker.pid, signal.SIGKILL)
            broker.wait()
    _wait(lambda: not _port_open(9092), 30, "the broker to stop")


def test_baseline_and_backtest() -> None:
    data = ROOT / "demo-data"
    shutil.rmtree(data, ignore_errors=True)
    try:
        record, baseline, replay = (_run(command) for command in BACKTEST)
        assert record.returncode == 0, record.stderr
        assert "demo-data/predictions.jsonl: 60,060 lines" in record.stdout
        assert baseline.returncode == 0, baseline.stderr
        assert "from 20,000 rows of training.csv" in baseline.stdout
        profile = json.loads((data / "fraud-detector-2026.11.1.json").read_text())
        assert profile["lineage"]["run_id"] == "demo-run-1"
        assert replay.returncode == 0, replay.stderr
        assert "replayed 60,000 predictions (60 rejected)" in replay.stdout
        alarms = json.loads((data / "backtest" / "alarms.json").read_text())
        first = alarms[0]
        assert (first["feature"], first["detector"]) == ("amount", "cusum_mean")
        assert 30_000 <= first["event_index"] < 30_500  # the demo's drift is at 30,000
        assert (data / "backtest" / "timeline.csv").stat().st_size > 0
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_the_partitions_benchmark_makes_the_readme_table() -> None:
    """Every alarm the same from 1, 4 and 12 partitions; the README's rows as printed, but
    for the messages/s columns (measured again in every run)."""
    result = _run(PARTITIONS, timeout=900)
    assert result.returncode == 0, result.stderr
    rows = [r for r in result.stdout.splitlines() if re.match(r"\| \d+ \|", r)]
    assert [r.split(" | ")[0] for r in rows] == ["| 1", "| 4", "| 12"]
    for row in rows:
        cells = row.split(" | ")
        assert cells[4] == "0", row  # no record forced out of the one order
        assert cells[5] == "yes", row  # the same alarms as from one partition
        alarms = " | ".join(cells[:7])  # the alarm columns, the same in every run
        assert alarms in README, row


def test_the_detection_benchmark_makes_the_readme_table() -> None:
    result = _run(BENCH, timeout=2700)
    assert result.returncode == 0, result.stderr
    made = (ROOT / "bench" / "detection" / "results.md").read_text().strip()
    assert made in README, "the README's table is not what the benchmark makes now"


def test_the_labels_benchmark_keeps_its_promises() -> None:
    result = _run(LABELS_BENCH, timeout=1800)
    assert result.returncode == 0, result.stderr
    made = (ROOT / "bench" / "labels" / "results.md").read_text()
    per_pending = int(re.search(r"\| bytes per pending prediction \| (\d+) \|", made)[1])  # type: ignore[index]
    assert per_pending <= 150
    slices = re.findall(
        r"\| ([\d,]+) distinct slice values \| (\d+) \| ([\d,]+) \| ([\d.]+) MiB", made
    )
    (_, few_tracked, few_series, few_mib), (_, many_tracked, many_series, many_mib) = slices
    assert int(few_tracked) == 10
    assert int(many_tracked) == 0  # values seen once are never heavy hitters
    assert int(many_series.replace(",", "")) <= int(few_series.replace(",", ""))
    assert float(many_mib) <= float(few_mib) * 2 + 1
    mixed = re.search(
        r"\| [\d,]+ distinct slice values among 60 frequent ones \| (\d+) \| ([\d,]+) \|", made
    )
    assert mixed is not None
    assert int(mixed[1]) == 50  # max_values, taken by frequent values
    assert int(mixed[2].replace(",", "")) <= int(few_series.replace(",", "")) * 6
    worst = float(re.search(r"Largest error: (\d+\.\d+)", made)[1])  # type: ignore[index]
    assert worst <= 0.02
    # the seeded estimate table is the README's, row for row
    estimate_rows = [line for line in made.splitlines() if re.match(r"\| \d \| 3,600 \|", line)]
    assert len(estimate_rows) == 8
    assert all(row in README for row in estimate_rows)


def test_the_soak_counts_every_message_exactly() -> None:
    """1% adversarial traffic and two broker kills: the benchmark exits 0 only when every
    count is exact; its count rows (the same in every run) are the README's."""
    result = _run(SOAK, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    made = (ROOT / "bench" / "soak" / "results.md").read_text()
    exact = [
        line
        for line in made.splitlines()
        if line.startswith(
            ("| valid", "| labels counted", "| labels:", "| rejected", "| dead", "| predictions:")
        )
        and "(at least)" not in line
    ]
    assert len(exact) == 22
    missing = [line for line in exact if line not in README]
    assert not missing, missing


def test_the_throughput_benchmark_measures_what_the_readme_shows(tmp_path: Path) -> None:
    """The README's command, on 20,000 events and one run instead of 10^6 and three (about
    20 minutes on our CI machine): every measurement is made and written, and the table has
    the README's rows. The figures themselves are the README's from the full run."""
    out, table = tmp_path / "results.json", tmp_path / "results.md"
    result = _run(
        f"{THROUGHPUT} --events 20000 --runs 1 --scale-events 4000 --latency-seconds 14 "
        f"--out {out} --table {table}",
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())
    for name in (
        "limit",
        "per_event",
        "window_batch",
        "streamwatch_2_workers",
        "streamwatch_2_workers_repartition",
    ):
        assert {"events_per_s", "cpu_s_per_million", "peak_rss_mb"} <= results[name].keys()
    for name in ("streamwatch", "streamwatch_labels"):
        assert results[name]["events_per_s"] > 0
    latency = {"latency_p50_s", "latency_p99_s", "ready_s", "latency_p99_s_reorder_0.25"}
    assert latency <= results["streamwatch"].keys()
    assert results["streamwatch"]["latency_p99_s"] >= results["streamwatch"]["latency_p50_s"]
    assert sorted(results["scaling"]) == ["f12-s20", "f12-s200", "f200-s20", "f50-s20"]

    def first_cells(text: str) -> list[str]:
        return [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| (")]

    shown = README[README.index("## Performance") :]
    assert first_cells(table.read_text()) == first_cells(shown)
    assert len(first_cells(shown)) == 7


def test_the_rules_test_as_the_readme_shows_it() -> None:
    result = _run(PROMTOOL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_deploy_commands() -> None:
    check = _run(DEPLOY_CHECK)
    assert check.returncode == 0, check.stderr
    assert "OK (1 model(s): fraud-detector)" in check.stdout
    built = _run(KUSTOMIZE)
    assert built.returncode == 0, built.stderr
    kinds = re.findall(r"^kind: (\w+)$", built.stdout, flags=re.MULTILINE)
    expected = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]
    assert sorted(kinds) == sorted([*expected, "PrometheusRule", "ServiceMonitor"])
    template = _run(TEMPLATE)
    assert template.returncode == 0, template.stderr
    assert template.stdout == (ROOT / "deploy/argo/analysis-template.yaml").read_text()
