"""Render the deploy files that are derived from others, so that no copy can drift:

- deploy/kubernetes/base/streamwatch.yaml      from deploy/streamwatch/streamwatch.yaml
- deploy/kubernetes/components/monitoring/prometheusrule.yaml
                                               from deploy/prometheus/rules/streamwatch.rules.yml
- deploy/argo/analysis-template.yaml           from the gate's checks and the config above

``--check`` writes nothing and exits 1 when a file is stale (tests/unit/test_deploy.py runs
it); ``make generate`` writes them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CONFIG = DEPLOY / "streamwatch/streamwatch.yaml"
RULES = DEPLOY / "prometheus/rules/streamwatch.rules.yml"
PROMETHEUS_IN_CLUSTER = "http://prometheus.monitoring.svc:9090"


def _generated(source: Path, command: str = "make generate") -> str:
    return f"# Generated from {source.relative_to(ROOT)} by `{command}`: edit that file instead.\n"


def config_map_file() -> str:
    return _generated(CONFIG) + CONFIG.read_text()


def prometheus_rule() -> str:
    rules = yaml.safe_load(RULES.read_text())
    body = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "streamwatch"},
        "spec": {"groups": rules["groups"]},
    }
    return _generated(RULES) + yaml.safe_dump(body, sort_keys=False, width=1000)


def analysis_template() -> str:
    from streamwatch.config import load_settings
    from streamwatch.gate import analysis_template as render

    return render(load_settings(CONFIG), PROMETHEUS_IN_CLUSTER)


FILES = {
    DEPLOY / "kubernetes/base/streamwatch.yaml": config_map_file,
    DEPLOY / "kubernetes/components/monitoring/prometheusrule.yaml": prometheus_rule,
    DEPLOY / "argo/analysis-template.yaml": analysis_template,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args()
    stale = []
    for path, render in FILES.items():
        text = render()
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
