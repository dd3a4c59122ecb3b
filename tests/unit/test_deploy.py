"""The deploy files, checked without a Docker engine or a cluster: the image definition
(hadolint and its rules), docker-compose.yml (the Compose specification's schema, mounts,
ports, references, pinned images, the mounted config), the Kubernetes overlays (built with
kustomize, validated against the Kubernetes schemas and the upstream CRDs) and the Argo
Rollouts files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from streamwatch.config import load_settings
from tests.conftest import ROOT, run_cli

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
CONFIG = DEPLOY / "streamwatch/streamwatch.yaml"
OVERLAYS = sorted((DEPLOY / "kubernetes/overlays").iterdir())
CRDS = ROOT / "tests/schemas/crds"


TOOLS = Path.home() / ".cache/streamwatch/bin"  # make kustomize builds it there


def _tool(name: str) -> str:
    path = shutil.which(
        name, path=os.pathsep.join([str(BIN), os.environ.get("PATH", ""), str(TOOLS)])
    )
    assert path, f"{name}: not installed (make setup installs the dev tools)"
    return path


# -- the image ---------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per instruction, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            rows.append((instruction.upper(), rest.strip()))
    return rows


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = subprocess.run(
        [_tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_pinned_slim_non_root_and_healthchecked() -> None:
    rows = _dockerfile()
    bases = [args.split()[0] for op, args in rows if op == "FROM"]
    assert bases, "no FROM"
    for base in bases:
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), f"unpinned base {base}"
    final = max(i for i, (op, _) in enumerate(rows) if op == "FROM")
    after = rows[final:]
    users = [args for op, args in after if op == "USER"]
    assert users, "the runtime stage runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric user, so that runAsNonRoot can check it"
    assert int(uid) != 0
    health = [args for op, args in after if op == "HEALTHCHECK"]
    port = load_settings(CONFIG).exporter.port
    assert health
    assert f"127.0.0.1:{port}/healthz" in health[0]
    assert ("STOPSIGNAL", "SIGTERM") in after
    entrypoint = [args for op, args in after if op == "ENTRYPOINT"]
    assert entrypoint == ['["streamwatch"]'], "exec form: SIGTERM reaches streamwatch"
    ignored = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] != "#"
    ]
    assert ignored[0] == "*"
    assert {"!pyproject.toml", "!streamwatch/", "!README.md"} <= set(ignored)


# -- docker-compose.yml ------------------------------------------------------------------


@cache
def _compose() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return body


def test_compose_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [
            _tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_images_are_pinned_to_exact_tags() -> None:
    for name, service in _compose()["services"].items():
        image = service["image"]
        _, _, tag = image.rpartition(":")
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not an exact tag"


def test_every_mounted_file_exists() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./"), f"{name}: {volume} is not a bind mount of ours"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"


def test_compose_references_and_ports_agree() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for needed in service.get("depends_on", []):
            assert needed in services, f"{name} depends on unknown {needed}"
    settings = load_settings(CONFIG)
    # workers: the mounted config, reached by Prometheus on the exporter's port
    prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    sd = prometheus["scrape_configs"][0]["dns_sd_configs"][0]
    assert sd["names"] == ["streamwatch"]
    assert "streamwatch" in services
    assert sd["port"] == settings.exporter.port
    assert settings.exporter.address == "0.0.0.0"
    alertmanager = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanager == ["alertmanager:9093"]
    assert "9093:9093" in services["alertmanager"]["ports"]
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert "9090:9090" in services["prometheus"]["ports"]
    # Grafana finds the dashboards where its provisioning says
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/streamwatch.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in services["grafana"]["volumes"]
    # the broker the config names is the one compose runs
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{settings.kafka.bootstrap_servers}"
    # the stop fits the worker's graceful stop
    grace = services["streamwatch"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > settings.worker.shutdown_grace_seconds


def test_compose_creates_co_partitioned_topics_for_every_worker() -> None:
    services = _compose()["services"]
    script = services["topics"]["command"][0]
    topics = load_settings(CONFIG).topics
    loop = re.search(r"for topic in (.+?); do", script)
    assert loop
    assert loop.group(1).split() == [topics.predictions, topics.labels, topics.dead_letters]
    partitions = int(re.search(r"--partitions (\d+)", script).group(1))  # type: ignore[union-attr]
    assert services["streamwatch"]["deploy"]["replicas"] <= partitions
    producer = services["demo-producer"]["command"]
    assert producer[:4] == [
        "demo",
        "--produce-only",
        "--config",
        "/etc/streamwatch/streamwatch.yaml",
    ]


def test_the_mounted_config_passes_check_config() -> None:
    result = run_cli("check-config", str(CONFIG))
    assert result.returncode == 0, result.stderr


# -- Kubernetes --------------------------------------------------------------------------


def test_derived_deploy_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/render_deploy.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}run: make generate"


def _kustomize(overlay: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    command = [kubectl, "kustomize"] if kubectl else [_tool("kustomize"), "build"]
    result = subprocess.run([*command, str(overlay)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def _validate(documents: list[dict[str, Any]], folder: Path) -> None:
    """Core kinds with kubernetes-validate (strict); custom resources against their CRD."""
    core = [d for d in documents if (d["apiVersion"], d["kind"]) not in _crd_schemas()]
    custom = [d for d in documents if (d["apiVersion"], d["kind"]) in _crd_schemas()]
    if core:
        path = folder / "core.yaml"
        path.write_text(yaml.safe_dump_all(core))
        result = subprocess.run(
            [_tool("kubernetes-validate"), "--strict", "-k", "1.31.0", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Couldn't find schema" not in result.stdout + result.stderr
    for document in custom:
        schema = _crd_schemas()[(document["apiVersion"], document["kind"])]
        # no meta-schema check: the CRDs' patterns are Go regular expressions, some of which
        # Python's re does not compile (they apply to fields these files do not set)
        jsonschema.Draft7Validator(schema).validate(document)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_every_overlay_builds_and_validates(overlay: Path, tmp_path: Path) -> None:
    documents = _kustomize(overlay)
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds
    unknown = [
        d["kind"]
        for d in documents
        if d["apiVersion"] not in ("v1", "apps/v1", "policy/v1")
        and (d["apiVersion"], d["kind"]) not in _crd_schemas()
    ]
    assert not unknown, f"no schema for {unknown}"
    _validate(documents, tmp_path)


def test_a_wrong_field_fails_validation(tmp_path: Path) -> None:
    """The validation above can fail: a misspelt field in a Deployment and in a CR."""
    documents = _kustomize(DEPLOY / "kubernetes/overlays/example")
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 40
    with pytest.raises(AssertionError):
        _validate([deployment], tmp_path)
    monitor = next(d for d in documents if d["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = 15
    with pytest.raises(jsonschema.ValidationError):
        _validate([monitor], tmp_path)


def test_the_deployment_fits_the_worker() -> None:
    documents = _kustomize(DEPLOY / "kubernetes/overlays/example")
    by_kind = {d["kind"]: d for d in documents}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config = yaml.safe_load(by_kind["ConfigMap"]["data"]["streamwatch.yaml"])
    assert config == yaml.safe_load(CONFIG.read_text())  # the same config as compose
    settings = load_settings(CONFIG)
    # the graceful stop fits: preStop, then the worker's grace, inside the pod's
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert (
        pre_stop + settings.worker.shutdown_grace_seconds + 5
        <= pod["terminationGracePeriodSeconds"]
    )
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"][0]["containerPort"] == settings.exporter.port
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    uid = next(a for op, a in _dockerfile() if op == "USER").split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid)
    secrets = [e for e in container["env"] if "valueFrom" in e]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in secrets} == {"streamwatch-kafka"}
    # the ServiceMonitor scrapes the Service's port; the rules select its job
    service_port = by_kind["Service"]["spec"]["ports"][0]["name"]
    assert by_kind["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == service_port
    rules = yaml.safe_load((DEPLOY / "prometheus/rules/streamwatch.rules.yml").read_text())
    assert by_kind["PrometheusRule"]["spec"]["groups"] == rules["groups"]


def test_autoscaling_is_opt_in_and_capped_at_the_partitions() -> None:
    example = {d["kind"] for d in _kustomize(DEPLOY / "kubernetes/overlays/example")}
    assert "ScaledObject" not in example
    scaled = next(
        d
        for d in _kustomize(DEPLOY / "kubernetes/overlays/autoscaling")
        if d["kind"] == "ScaledObject"
    )
    script = _compose()["services"]["topics"]["command"][0]
    partitions = int(re.search(r"--partitions (\d+)", script).group(1))  # type: ignore[union-attr]
    assert scaled["spec"]["maxReplicaCount"] <= partitions
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    settings = load_settings(CONFIG)
    assert trigger["consumerGroup"] == settings.kafka.group_id
    assert trigger["topic"] == settings.topics.predictions
    assert trigger["allowIdleConsumers"] == "false"


# -- Argo Rollouts -----------------------------------------------------------------------


def test_the_argo_files_validate_and_agree(tmp_path: Path) -> None:
    template = yaml.safe_load((DEPLOY / "argo/analysis-template.yaml").read_text())
    rollout = yaml.safe_load((DEPLOY / "argo/rollout-example.yaml").read_text())
    _validate([template, rollout], tmp_path)
    arguments = {a["name"] for a in template["spec"]["args"]}
    for step in rollout["spec"]["strategy"]["canary"]["steps"]:
        if "analysis" in step:
            assert step["analysis"]["templates"][0]["templateName"] == template["metadata"]["name"]
            assert {a["name"] for a in step["analysis"]["args"]} <= arguments
