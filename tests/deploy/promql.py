"""PromQL of the chart's dashboards and alerts, and the metric names each query reads.

Shared by the deploy tier (queries parse) and the e2e tier (names exist in a live scrape).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "chatpop"

# Metrics that dashboards and alerts read but that come from the monitoring stack, not ChatPop.
EXTERNAL_METRICS = {
    "up": "Prometheus itself, per scrape target",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
}

_GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
_LABEL_VALUES = re.compile(r"label_values\((?P<selector>[^,]+),")
_PLACEHOLDER = re.compile(r"__[A-Za-z0-9]+__")


def _grafana_to_promql(query: str) -> str:
    for variable, value in _GRAFANA_INTERVALS.items():
        query = query.replace(variable, value)
    return query


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in panels:
        found.append(panel)
        found += _panels(panel.get("panels", []))
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable of every dashboard."""
    queries: list[tuple[str, str]] = []
    for path in sorted((CHART / "files" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                where = f"{path.name}: {panel['title']} ({target.get('refId')})"
                queries.append((where, _grafana_to_promql(target["expr"])))
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = _LABEL_VALUES.search(query)
            if match:
                queries.append((f"{path.name}: variable {variable['name']}", match.group("selector").strip()))
    return queries


def alert_queries() -> list[tuple[str, str]]:
    """(alert, PromQL) of files/prometheus-rules.yaml, placeholders filled with sample values."""
    text = (CHART / "files" / "prometheus-rules.yaml").read_text()
    rules = yaml.safe_load(text)
    queries = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            expr = _PLACEHOLDER.sub(
                lambda m: "chatpop" if m.group(0) in ("__namespace__", "__fullname__") else "1", rule["expr"]
            )
            queries.append((rule["alert"], expr))
    return queries


def metric_names(query: str) -> set[str]:
    """Names of the series a PromQL query selects."""
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(query), visit)
    return names
