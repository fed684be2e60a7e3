"""The Tiltfile, evaluated by a Starlark interpreter with Tilt's builtins stubbed and recorded.

The stubs record every call; the tests then check that each service is built from its own small
context with a live update that syncs code and restarts the process, that the chart is deployed
with the dev values, and that every resource the Tiltfile names exists in that rendering.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import helm_python as helm
import pytest
import starlark

from tests.deploy.conftest import CHART, REPO, SERVICES, load_values

TILTFILE = REPO / "Tiltfile"
DOCKERFILE = REPO / "services" / "Dockerfile"


@dataclass
class Tilt:
    """What the Tiltfile asked Tilt to do, in order."""

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)

    def named(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for call, args, kwargs in self.calls if call == name]

    def index(self, name: str) -> int:
        return next(i for i, (call, _a, _k) in enumerate(self.calls) if call == name)


def evaluate(args: dict[str, Any] | None = None, source: str | None = None) -> Tilt:
    tilt = Tilt(args=dict(args or {}))

    def recorder(name: str) -> Callable[..., Any]:
        def record(*call_args: Any, **kwargs: Any) -> Any:
            tilt.calls.append((name, call_args, kwargs))
            return {"tilt": name, "args": list(call_args), "kwargs": kwargs}

        return record

    def parse_config() -> dict[str, Any]:
        tilt.calls.append(("config.parse", (), {}))
        return tilt.args

    module = starlark.Module()
    for name in (
        "allow_k8s_contexts",
        "docker_build",
        "k8s_yaml",
        "helm",
        "blob",
        "k8s_resource",
        "sync",
        "run",
        "fall_back_on",
        "port_forward",
        "link",
        "local_resource",
        "_config_define_string",
        "_config_define_string_list",
    ):
        module.add_callable(name, recorder(name))
    module.add_callable("_config_parse", parse_config)
    module["TRIGGER_MODE_MANUAL"] = "manual"
    module["TRIGGER_MODE_AUTO"] = "auto"

    extension = starlark.Module()
    extension.add_callable("docker_build_with_restart", recorder("docker_build_with_restart"))
    frozen_extension = extension.freeze()

    def load(path: str) -> starlark.FrozenModule:
        if path != "ext://restart_process":
            raise ValueError(f"unexpected load({path!r})")
        return frozen_extension

    prelude = (
        "config = struct(define_string=_config_define_string, "
        "define_string_list=_config_define_string_list, parse=_config_parse)\n"
    )
    text = prelude + (source if source is not None else TILTFILE.read_text())
    ast = starlark.parse("Tiltfile", text, starlark.Dialect.extended())
    globals_ = starlark.Globals.extended_by([starlark.LibraryExtension.StructType])
    starlark.eval(module, ast, globals_, starlark.FileLoader(load))
    return tilt


@pytest.fixture(scope="module")
def tilt() -> Tilt:
    return evaluate()


def test_only_local_clusters_are_allowed_before_anything_is_deployed(tilt: Tilt) -> None:
    ((contexts,), _) = tilt.named("allow_k8s_contexts")[0]
    assert "kind-chatpop" in contexts
    assert not [c for c in contexts if re.search(r"prod|gke_|arn:aws|aks", c)]
    assert tilt.index("allow_k8s_contexts") < tilt.index("k8s_yaml")
    extra = evaluate({"allow-context": ["my-lab"]})
    assert "my-lab" in extra.named("allow_k8s_contexts")[0][0][0]


def test_every_service_is_built_from_a_small_context_with_live_update(tilt: Tilt) -> None:
    builds = {args[0]: (args, kwargs) for args, kwargs in tilt.named("docker_build_with_restart")}
    assert sorted(builds) == sorted(f"chatpop-{name}" for name in SERVICES)
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE.read_text(), re.MULTILINE))
    for name in SERVICES:
        args, kwargs = builds[f"chatpop-{name}"]
        assert args[1] == "."
        assert kwargs["dockerfile"] == "services/Dockerfile"
        assert kwargs["target"] == name and name in targets
        assert kwargs["entrypoint"] == ["python", "-m", f"chatpop_{name}"]
        only = kwargs["only"]
        assert set(only) == {"requirements.lock", "services/common", f"services/{name}"}, only
        steps = kwargs["live_update"]
        assert steps[0]["tilt"] == "fall_back_on"
        assert "requirements.lock" in steps[0]["args"][0]
        synced = {(s["args"][0], s["args"][1]) for s in steps if s["tilt"] == "sync"}
        assert synced == {
            ("services/common/", "/app/services/common/"),
            (f"services/{name}/chatpop_{name}/", f"/app/services/{name}/chatpop_{name}/"),
        }


def test_the_tools_image_is_built_for_migrations_and_tests(tilt: Tilt) -> None:
    ((ref, context), kwargs) = tilt.named("docker_build")[0]
    assert (ref, context, kwargs["target"]) == ("chatpop-tools", ".", "tools")


def test_the_chart_is_deployed_with_the_dev_values(tilt: Tilt) -> None:
    charts = [args[0] for args, _ in tilt.named("k8s_yaml") if args[0]["tilt"] == "helm"]
    assert len(charts) == 1
    chart = charts[0]
    assert chart["args"] == ["helm/chatpop"]
    assert chart["kwargs"]["values"] == ["helm/chatpop/values-dev.yaml"]
    assert chart["kwargs"]["namespace"] == "chatpop"
    assert evaluate({"namespace": "mine"}).named("helm")[0][1]["namespace"] == "mine"


def _dev_workloads() -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(load_values("values-dev.yaml"), name="chatpop", namespace="chatpop")
    import yaml

    found = {}
    for path, text in files.items():
        if path.endswith(".yaml"):
            for obj in yaml.safe_load_all(text):
                if obj and obj["kind"] in ("Deployment", "Job", "Pod"):
                    found[obj["metadata"]["name"]] = obj["kind"]
    return found


def test_every_resource_exists_in_the_chart_and_has_labels_and_dependencies(tilt: Tilt) -> None:
    workloads = _dev_workloads()
    resources = {args[0]: kwargs for args, kwargs in tilt.named("k8s_resource")}
    assert set(resources) == set(workloads), "Tiltfile and chart disagree on workloads"
    renamed = {kwargs["new_name"]: kwargs for kwargs in resources.values()}
    for name in SERVICES:
        assert renamed[name]["labels"]
        assert "migrations" in renamed[name].get("resource_deps", []) or name == "edge"
    assert set(renamed["edge"]["resource_deps"]) >= {"identity", "rooms", "messaging", "payments"}
    for resource in renamed.values():
        for dependency in resource.get("resource_deps", []):
            assert dependency in renamed, f"unknown resource_dep {dependency}"


def test_edge_and_grafana_are_port_forwarded(tilt: Tilt) -> None:
    forwards = {
        kwargs["new_name"]: [(f["args"][0], f["args"][1]) for f in kwargs.get("port_forwards", [])]
        for _args, kwargs in tilt.named("k8s_resource")
    }
    assert (8080, 8080) in forwards["edge"]
    assert (3000, 3000) in forwards["grafana"]


def test_a_tiltfile_error_is_reported() -> None:
    with pytest.raises(starlark.StarlarkError):
        evaluate(source="docker_build('x', '.', only=undefined_name)\n")
