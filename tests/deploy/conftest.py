"""The deploy tier: static checks of the images, the Helm chart, the Tiltfile and the protos.

Nothing here needs a cluster or a network: the chart is rendered and linted by Helm's own Go code
(helm-python-sdk bundles it as a shared library), manifests are validated against the Kubernetes
schemas shipped in kubernetes-validate, the Tiltfile runs in a Starlark interpreter with Tilt's
builtins stubbed, and hadolint and buf come as binaries inside their Python packages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "chatpop"
SERVICES = ("identity", "rooms", "messaging", "payments", "edge")
GRPC_SERVICES = SERVICES[:-1]
RELEASE = "chatpop"
NAMESPACE = "chat"

# The values files every check runs with: name → files layered in order (like repeated -f).
SCENARIOS: dict[str, tuple[str, ...]] = {
    "default": (),
    "all-features": ("ci/all-features-values.yaml",),
    "external-datastores": ("ci/external-datastores-values.yaml",),
    "network-policies": ("ci/network-policies-values.yaml",),
    "redis-cluster": ("ci/redis-cluster-values.yaml",),
    "dev": ("values-dev.yaml",),
}


def values_files() -> list[Path]:
    """Every values file shipped with the chart."""
    return sorted([*CHART.glob("values*.yaml"), *(CHART / "ci").glob("*.yaml")])


def load_values(*files: str) -> dict[str, Any]:
    """The user values of a scenario: the files merged like Helm merges repeated -f flags."""
    merged: dict[str, Any] = {}
    for name in files:
        data = yaml.safe_load((CHART / name).read_text()) or {}
        _merge(merged, data)
    return merged


def _merge(into: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@dataclass
class Rendered:
    """One rendering of the chart: manifests by template, and every object parsed."""

    scenario: str
    values: dict[str, Any]
    files: dict[str, str]
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for o in self.objects:
            if o["kind"] == kind and o["metadata"]["name"] == name:
                return o
        raise KeyError(f"no {kind} {name} in the {self.scenario} rendering")

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.of_kind(kind)}


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any], scenario: str = "custom") -> Rendered:
    files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(files.items()):
        if not path.endswith(".yaml"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document.setdefault("metadata", {})
                document["_template"] = path
                objects.append(document)
    return Rendered(scenario=scenario, values=values, files=files, objects=objects)


@pytest.fixture(scope="session")
def renderings(chart: helm.Chart) -> dict[str, Rendered]:
    return {name: render(chart, load_values(*files), name) for name, files in SCENARIOS.items()}


def component(name: str) -> str:
    return f"{RELEASE}-{name}"


def strip_private(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}
