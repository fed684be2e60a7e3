"""The Helm chart: lint, render with every values file, validate against Kubernetes, and check
what an SRE relies on (labels, ports, probes, hooks, secrets by reference, autoscaling, policies)."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import kubernetes_validate
import promql_parser
import pytest
import yaml

from tests.deploy.conftest import (
    CHART,
    GRPC_SERVICES,
    NAMESPACE,
    REPO,
    SCENARIOS,
    SERVICES,
    Rendered,
    component,
    load_values,
    render,
    strip_private,
    values_files,
)

KUBE_VERSIONS = ("1.30.0", "1.33.0")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj["spec"]
    pod = spec if obj["kind"] == "Pod" else spec["template"]["spec"]
    return list(pod["containers"])


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


# -- lint and schema ----------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_chart_lints_clean(scenario: str) -> None:
    report = helm.lint(CHART, load_values(*SCENARIOS[scenario]), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems, problems
    assert not report["errors"], report["errors"]


@pytest.mark.parametrize("path", values_files(), ids=lambda p: p.name)
def test_every_values_file_matches_the_schema(chart: helm.Chart, path: Any) -> None:
    chart.validate_schema(yaml.safe_load(path.read_text()) or {})


@pytest.mark.parametrize(
    "values",
    [
        {"replicas": 3},
        {"defaults": {"replica": 3}},
        {"services": {"edge": {"replicass": 2}}},
        {"services": {"web": {}}},
        {"services": {"rooms": {"trustedProxies": ["10.0.0.0/8"]}}},
        {"metrics": {"serviceMonitor": {"enable": True}}},
        {"networkPolicy": {"stripe": {"cidr": ["0.0.0.0/0"]}}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"otel": {"sampleRatio": 2}},
        {"mail": {"smtpUrl": "smtp://mail.example.com"}},
        {"mail": {"port": 0}},
        {"mail": {"from": "nobody"}},
        {"payments": {"platformFeePercent": 101}},
        {"payments": {"tipMinCents": 10}},
        {"payments": {"tipPreset": [100]}},
        {"stripe": {"apiBase": "https://api.stripe.com/v1"}},
        {"media": {"s3": {"bucketName": "media"}}},
        {"media": {"bucket": "media"}},
        {"media": {"s3": {"addressingStyle": "sideways"}}},
        {"media": {"s3": {"bucket": "Media_Bucket"}}},
        {"media": {"s3": {"endpoint": "s3.example.com"}}},
        {"media": {"s3": {"port": 0}}},
        {"mediaUrlKey": {"existingSecretName": "x"}},
        {"networkPolicy": {"s3to": []}},
        {"dev": {"secrets": {"mediaUrlKey": "too-short"}}},
    ],
    ids=lambda v: json.dumps(v, sort_keys=True),
)
def test_the_schema_rejects_unknown_keys_and_bad_values(chart: helm.Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name="chatpop")


def test_templates_never_generate_or_look_up_secrets() -> None:
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            text = template.read_text()
            for forbidden in ("lookup", "randAlpha", "randAlphaNum", "randAscii", "genPrivateKey", "uuidv4"):
                assert forbidden not in text, f"{template.name} uses {forbidden}"


# -- Kubernetes validity ------------------------------------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_manifest_is_valid_kubernetes(
    renderings: dict[str, Rendered], scenario: str, kube_version: str
) -> None:
    rendered = renderings[scenario]
    assert rendered.objects
    for obj in rendered.objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(strip_private(obj), kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{obj['kind']} {obj['metadata'].get('name')} ({obj['_template']}): {path}: {exc.message}"
            )


def test_validation_catches_a_broken_manifest(renderings: dict[str, Rendered]) -> None:
    deployment = strip_private(renderings["default"].get("Deployment", component("edge")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def test_monitoring_resources_have_the_shape_prometheus_operator_expects(
    renderings: dict[str, Rendered],
) -> None:
    rendered = renderings["all-features"]
    monitor = rendered.get("ServiceMonitor", "chatpop")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    selected = monitor["spec"]["selector"]["matchExpressions"][0]["values"]
    assert sorted(selected) == sorted(SERVICES)
    rules = rendered.get("PrometheusRule", "chatpop")
    assert rules["apiVersion"] == "monitoring.coreos.com/v1"
    alerts = [rule for group in rules["spec"]["groups"] for rule in group["rules"]]
    assert alerts
    runbook = (REPO / "helm" / "RUNBOOK.md").read_text().lower()
    for alert in alerts:
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["summary"]
        assert "__" not in alert["expr"], f"{alert['alert']}: unfilled placeholder"
        promql_parser.parse(alert["expr"])
        anchor = alert["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == alert["alert"].lower()
        assert f"## {anchor}" in runbook, f"RUNBOOK.md has no section for {alert['alert']}"


def test_alerts_cover_errors_latency_resumes_and_restarts(renderings: dict[str, Rendered]) -> None:
    rules = renderings["all-features"].get("PrometheusRule", "chatpop")
    exprs = " ".join(rule["expr"] for group in rules["spec"]["groups"] for rule in group["rules"])
    for metric in (
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "chatpop_resume_total",
        "kube_pod_container_status_restarts_total",
    ):
        assert metric in exprs
    assert f'namespace="{NAMESPACE}"' in exprs


# -- workloads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_carries_the_standard_labels(renderings: dict[str, Rendered], scenario: str) -> None:
    for obj in renderings[scenario].objects:
        labels = obj["metadata"].get("labels", {})
        missing = [label for label in STANDARD_LABELS if label not in labels]
        assert not missing, f"{obj['kind']} {obj['metadata']['name']} lacks {missing}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_service_is_deployed_with_named_ports_and_native_probes(
    renderings: dict[str, Rendered], scenario: str
) -> None:
    rendered = renderings[scenario]
    for name in SERVICES:
        deployment = rendered.get("Deployment", component(name))
        (container,) = _containers(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        main = "http" if name == "edge" else "grpc"
        assert set(ports) == {main, "metrics"}
        assert container["image"].split("/")[-1].startswith(f"chatpop-{name}:")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if name == "edge":
                assert container[probe]["httpGet"]["port"] == "http"
            else:
                assert container[probe]["grpc"]["port"] == ports["grpc"]
        assert container["readinessProbe"].get("httpGet", {}).get("path", "/readyz") == "/readyz"
        env = _env(container)
        assert env["METRICS_PORT"]["value"] == str(ports["metrics"])
        if name != "edge":
            assert env["GRPC_HOST"]["value"] == "0.0.0.0"
            assert env["GRPC_PORT"]["value"] == str(ports["grpc"])
        for other in GRPC_SERVICES:
            # Headless Service name + port: the clients resolve every pod and balance per call.
            assert env[f"{other.upper()}_ADDR"]["value"].startswith(f"{component(other)}:")

        service = rendered.get("Service", component(name))
        service_ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert set(service_ports) == {main, "metrics"}
        assert all(p["targetPort"] == p["name"] for p in service_ports.values())
        if name == "edge":
            assert service["spec"]["type"] == "ClusterIP"
        else:
            assert service["spec"]["clusterIP"] == "None"


def test_pods_run_unprivileged_on_a_read_only_root(renderings: dict[str, Rendered]) -> None:
    rendered = renderings["default"]
    for obj in [*rendered.of_kind("Deployment"), *rendered.of_kind("Job"), *rendered.of_kind("Pod")]:
        pod = obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]


def test_shutdown_leaves_time_to_drain(renderings: dict[str, Rendered]) -> None:
    for name in SERVICES:
        deployment = renderings["default"].get("Deployment", component(name))
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        grace = float(_env(container)["SHUTDOWN_GRACE"]["value"])
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > grace + pause


def test_edge_and_messaging_autoscale_and_every_replicated_service_has_a_pdb(
    renderings: dict[str, Rendered],
) -> None:
    rendered = renderings["default"]
    assert rendered.names("HorizontalPodAutoscaler") == {component("edge"), component("messaging")}
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] == hpa["metadata"]["name"]
        assert "replicas" not in rendered.get("Deployment", hpa["metadata"]["name"])["spec"]
    assert rendered.names("PodDisruptionBudget") == {component(name) for name in SERVICES}


def test_per_service_overrides_win_over_defaults_even_when_false(renderings: dict[str, Rendered]) -> None:
    rendered = renderings["all-features"]
    # rooms sets pdb.enabled: false over the default true; identity turns autoscaling on.
    assert component("rooms") not in rendered.names("PodDisruptionBudget")
    assert component("identity") in rendered.names("HorizontalPodAutoscaler")
    assert rendered.get("Deployment", component("payments"))["spec"]["replicas"] == 3
    edge = _env(_containers(rendered.get("Deployment", component("edge")))[0])
    assert edge["TRUSTED_PROXIES"]["value"] == "10.0.0.0/8"
    assert edge["DB_POOL_MAX"]["value"] == "20"
    assert edge["PUBLIC_URL"]["value"] == "https://chat.example.com"


def test_images_follow_registry_repository_and_tag(renderings: dict[str, Rendered]) -> None:
    rendered = renderings["all-features"]
    for name in SERVICES:
        (container,) = _containers(rendered.get("Deployment", component(name)))
        assert container["image"] == f"registry.example.com/chat/chatpop-{name}:1.2.3"
    (job,) = rendered.of_kind("Job")
    assert _containers(job)[0]["image"] == "registry.example.com/chat/chatpop-tools:1.2.3"


def test_tracing_is_configured_only_by_standard_otel_variables(renderings: dict[str, Rendered]) -> None:
    off = _env(_containers(renderings["default"].get("Deployment", component("rooms")))[0])
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in off
    on = _env(_containers(renderings["all-features"].get("Deployment", component("rooms")))[0])
    assert on["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector.observability.svc:4317"
    assert on["OTEL_SERVICE_NAME"]["value"] == "chatpop-rooms"
    assert on["OTEL_TRACES_SAMPLER"]["value"] == "parentbased_traceidratio"
    assert on["OTEL_TRACES_SAMPLER_ARG"]["value"] == "0.1"
    assert "deployment.environment=production" in on["OTEL_RESOURCE_ATTRIBUTES"]["value"]


# -- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["default", "all-features", "external-datastores"])
def test_secrets_are_only_referenced_never_rendered(renderings: dict[str, Rendered], scenario: str) -> None:
    rendered = renderings[scenario]
    assert rendered.of_kind("Secret") == []
    values = load_values(*SCENARIOS[scenario])
    postgres = {
        "existingSecret": "chatpop-secrets",
        "existingSecretKey": "database-url",
        **values.get("postgres", {}),
    }
    for name in GRPC_SERVICES:
        env = _env(_containers(rendered.get("Deployment", component(name)))[0])
        ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (postgres["existingSecret"], postgres["existingSecretKey"])
    for name in ("payments", "edge"):
        assert "REDIS_URL" not in _env(_containers(rendered.get("Deployment", component(name)))[0])


def test_a_missing_secret_reference_fails_with_a_clear_message(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"postgres\.existingSecret is required"):
        chart.render({"postgres": {"existingSecret": ""}}, name="chatpop")


def test_stripe_keys_come_from_their_secret_and_test_mode_is_announced(
    renderings: dict[str, Rendered],
) -> None:
    default = renderings["default"]
    assert "STRIPE_SECRET_KEY" not in _env(_containers(default.get("Deployment", component("payments")))[0])
    assert "TEST MODE" in default.files["chatpop/templates/NOTES.txt"]
    full = renderings["all-features"]
    env = _env(_containers(full.get("Deployment", component("payments")))[0])
    for variable, key in (
        ("STRIPE_SECRET_KEY", "stripe-secret-key"),
        ("STRIPE_PUBLISHABLE_KEY", "stripe-publishable-key"),
        ("STRIPE_WEBHOOK_SECRET", "stripe-webhook-secret"),
    ):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("chatpop-stripe", key)
    assert "TEST MODE" not in full.files["chatpop/templates/NOTES.txt"]
    # The edge gets the publishable key only (its pages then let Stripe.js load), never the others.
    edge = _env(_containers(full.get("Deployment", component("edge")))[0])
    ref = edge["STRIPE_PUBLISHABLE_KEY"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("chatpop-stripe", "stripe-publishable-key")
    assert not {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"} & set(edge)
    default_edge = _env(_containers(default.get("Deployment", component("edge")))[0])
    assert "STRIPE_PUBLISHABLE_KEY" not in default_edge


def test_payments_get_the_fee_tip_bounds_and_reconciliation_interval(renderings: dict[str, Rendered]) -> None:
    env = _env(_containers(renderings["default"].get("Deployment", component("payments")))[0])
    assert {
        name: env[name]["value"]
        for name in (
            "PLATFORM_FEE_PERCENT",
            "TIP_MIN_CENTS",
            "TIP_MAX_CENTS",
            "TIP_PRESETS_CENTS",
            "RECONCILE_INTERVAL",
        )
    } == {
        "PLATFORM_FEE_PERCENT": "10",
        "TIP_MIN_CENTS": "100",
        "TIP_MAX_CENTS": "50000",
        "TIP_PRESETS_CENTS": "100,200,500,1000",
        "RECONCILE_INTERVAL": "60",
    }
    # Stripe's own API unless a base is given.
    assert "STRIPE_API_BASE" not in env


def test_identity_mails_through_the_smtp_secret_or_says_that_nothing_is_mailed(
    renderings: dict[str, Rendered],
) -> None:
    default = renderings["default"]
    env = _env(_containers(default.get("Deployment", component("identity")))[0])
    assert "SMTP_URL" not in env
    assert env["PUBLIC_URL"]["value"] == "http://localhost:8080"
    assert env["MAIL_FROM"]["value"] == "ChatPop <no-reply@localhost>"
    assert "nothing is mailed" in default.files["chatpop/templates/NOTES.txt"]
    full = renderings["all-features"]
    env = _env(_containers(full.get("Deployment", component("identity")))[0])
    assert env["SMTP_URL"]["valueFrom"]["secretKeyRef"] == {"name": "chatpop-mail", "key": "smtp-url"}
    # Links in mails point at the public address, the same one the edge hands out.
    edge_env = _env(_containers(full.get("Deployment", component("edge")))[0])
    assert env["PUBLIC_URL"]["value"] == edge_env["PUBLIC_URL"]["value"] == "https://chat.example.com"
    assert env["MAIL_FROM"]["value"] == "ChatPop <no-reply@chat.example.com>"
    assert "nothing is mailed" not in full.files["chatpop/templates/NOTES.txt"]
    for name in ("rooms", "messaging", "payments", "edge"):
        assert "SMTP_URL" not in _env(_containers(full.get("Deployment", component(name)))[0]), name


def test_only_identity_reaches_the_smtp_server_and_only_when_mail_is_on(
    chart: helm.Chart, renderings: dict[str, Rendered]
) -> None:
    for name in SERVICES:
        assert (587 in _egress_ports(_policy(renderings["all-features"], name))) == (name == "identity"), name
        assert 587 not in _egress_ports(_policy(renderings["network-policies"], name)), name
    narrowed = render(
        chart,
        {
            **load_values(*SCENARIOS["all-features"]),
            "mail": {"existingSecret": "chatpop-mail", "port": 465},
            "networkPolicy": {
                **load_values(*SCENARIOS["all-features"])["networkPolicy"],
                "smtpTo": [{"ipBlock": {"cidr": "198.51.100.25/32"}}],
            },
        },
    )
    by_port = {rule["ports"][0]["port"]: rule for rule in _policy(narrowed, "identity")["egress"]}
    assert by_port[465]["to"] == [{"ipBlock": {"cidr": "198.51.100.25/32"}}]
    assert 587 not in by_port


def test_identity_reads_its_signing_key_from_a_mounted_secret(renderings: dict[str, Rendered]) -> None:
    deployment = renderings["all-features"].get("Deployment", component("identity"))
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _env(container)
    assert env["IDENTITY_SIGNING_KEY_FILE"]["value"] == "/etc/chatpop/identity/signing-key.pem"
    assert env["IDENTITY_EXTRA_PUBLIC_KEY_FILES"]["value"] == "/etc/chatpop/identity/extra-0.pem"
    (volume,) = [v for v in pod["volumes"] if v["name"] == "signing-key"]
    keys = {item["key"]: item["path"] for item in volume["secret"]["items"]}
    assert keys == {"identity-signing-key.pem": "signing-key.pem", "identity-previous-key.pem": "extra-0.pem"}


@pytest.mark.parametrize(
    ("scenario", "secret", "key"),
    [("default", "chatpop-secrets", "master-keys.json"), ("dev", "chatpop-dev", "master-keys.json")],
)
def test_only_messaging_mounts_the_master_keys_from_an_existing_secret(
    renderings: dict[str, Rendered], scenario: str, secret: str, key: str
) -> None:
    rendered = renderings[scenario]
    pod = rendered.get("Deployment", component("messaging"))["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert _env(container)["MASTER_KEYS_FILE"]["value"] == "/etc/chatpop/messaging/master-keys.json"
    assert {"name": "master-keys", "mountPath": "/etc/chatpop/messaging", "readOnly": True} in container[
        "volumeMounts"
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "master-keys"]
    assert volume["secret"]["secretName"] == secret
    assert volume["secret"]["items"] == [{"key": key, "path": "master-keys.json"}]
    for name in ("identity", "rooms", "payments", "edge"):
        assert "MASTER_KEYS_FILE" not in _env(_containers(rendered.get("Deployment", component(name)))[0])
    # The chart never makes master keys up: the Secret is the operator's (or the dev values' own).
    if scenario == "dev":
        (dev_secret,) = rendered.of_kind("Secret")
        assert json.loads(dev_secret["stringData"][key])["current"] == 1


@pytest.mark.parametrize(
    ("scenario", "secret", "key"),
    [
        ("default", "chatpop-secrets", "access-code-key"),
        ("external-datastores", "chatpop-rooms", "access-code-key"),
        ("dev", "chatpop-dev", "access-code-key"),
    ],
)
def test_only_rooms_gets_the_access_code_key_from_its_secret(
    renderings: dict[str, Rendered], scenario: str, secret: str, key: str
) -> None:
    rendered = renderings[scenario]
    env = _env(_containers(rendered.get("Deployment", component("rooms")))[0])
    ref = env["ACCESS_CODE_KEY"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (secret, key)
    for name in ("identity", "messaging", "payments", "edge"):
        assert "ACCESS_CODE_KEY" not in _env(_containers(rendered.get("Deployment", component(name)))[0])


@pytest.mark.parametrize(
    ("scenario", "secret", "key"),
    [
        ("default", "chatpop-secrets", "service-token-secret"),
        ("external-datastores", "chatpop-services", "service-token-secret"),
        ("dev", "chatpop-dev", "service-token-secret"),
    ],
)
def test_the_services_that_hold_service_credentials_get_the_shared_secret(
    renderings: dict[str, Rendered], scenario: str, secret: str, key: str
) -> None:
    rendered = renderings[scenario]
    # The edge too: it asks messaging for media records as the service `edge`.
    for name in ("identity", "rooms", "messaging", "payments", "edge"):
        env = _env(_containers(rendered.get("Deployment", component(name)))[0])
        ref = env["SERVICE_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (secret, key)


@pytest.mark.parametrize(
    ("scenario", "secret", "key"),
    [
        ("default", "chatpop-secrets", "media-url-key"),
        ("external-datastores", "chatpop-edge", "media-url-key"),
        ("dev", "chatpop-dev", "media-url-key"),
    ],
)
def test_only_the_edge_gets_the_media_url_key(
    renderings: dict[str, Rendered], scenario: str, secret: str, key: str
) -> None:
    rendered = renderings[scenario]
    ref = _env(_containers(rendered.get("Deployment", component("edge")))[0])["MEDIA_URL_KEY"]["valueFrom"]
    assert (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]) == (secret, key)
    for name in GRPC_SERVICES:
        assert "MEDIA_URL_KEY" not in _env(_containers(rendered.get("Deployment", component(name)))[0])
    if scenario == "dev":
        (dev_secret,) = rendered.of_kind("Secret")
        assert len(dev_secret["stringData"]["media-url-key"]) >= 32


def _s3_env(rendered: Rendered, name: str) -> dict[str, dict[str, Any]]:
    env = _env(_containers(rendered.get("Deployment", component(name)))[0])
    return {key: value for key, value in env.items() if key.startswith("S3_")}


@pytest.mark.parametrize("scenario", ["default", "dev", "network-policies"])
def test_without_a_bucket_media_is_off_and_no_service_gets_s3_settings(
    renderings: dict[str, Rendered], scenario: str
) -> None:
    for name in SERVICES:
        assert _s3_env(renderings[scenario], name) == {}, name


def test_an_external_s3_reaches_the_edge_and_messaging_only(renderings: dict[str, Rendered]) -> None:
    rendered = renderings["external-datastores"]
    expected = {
        "S3_ENDPOINT_URL": {"value": "http://seaweedfs-s3.storage.svc:8333"},
        "S3_REGION": {"value": "us-east-1"},
        "S3_BUCKET": {"value": "chatpop-media"},
        "S3_ADDRESSING_STYLE": {"value": "path"},
        "S3_ACCESS_KEY_ID": {"valueFrom": {"secretKeyRef": {"name": "chatpop-s3", "key": "access-key"}}},
        "S3_SECRET_ACCESS_KEY": {"valueFrom": {"secretKeyRef": {"name": "chatpop-s3", "key": "secret-key"}}},
    }
    edge = {
        key: {k: v for k, v in value.items() if k != "name"}
        for key, value in _s3_env(rendered, "edge").items()
    }
    messaging = {
        key: {k: v for k, v in value.items() if k != "name"}
        for key, value in _s3_env(rendered, "messaging").items()
    }
    assert edge == expected
    assert messaging == {**expected, "S3_VACUUM_URL": {"value": "http://seaweedfs-master.storage.svc:9333"}}
    for name in ("identity", "rooms", "payments"):
        assert _s3_env(rendered, name) == {}, name


def test_aws_s3_needs_no_endpoint(renderings: dict[str, Rendered]) -> None:
    edge = _s3_env(renderings["all-features"], "edge")
    assert "S3_ENDPOINT_URL" not in edge
    assert "S3_VACUUM_URL" not in _s3_env(renderings["all-features"], "messaging")
    assert (edge["S3_REGION"]["value"], edge["S3_BUCKET"]["value"]) == ("eu-west-1", "chatpop-media-prod")
    assert edge["S3_ADDRESSING_STYLE"]["value"] == "virtual"
    assert edge["S3_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "chatpop-s3",
        "key": "s3-secret-access-key",
    }


def test_without_a_key_secret_the_sdk_finds_its_own_credentials(chart: helm.Chart) -> None:
    rendered = render(chart, {"media": {"s3": {"bucket": "media"}}})
    edge = _s3_env(rendered, "edge")
    assert edge["S3_BUCKET"]["value"] == "media"
    assert "S3_ACCESS_KEY_ID" not in edge and "S3_SECRET_ACCESS_KEY" not in edge


def test_dev_values_bring_fixed_secrets_and_datastores(renderings: dict[str, Rendered]) -> None:
    rendered = renderings["dev"]
    (secret,) = rendered.of_kind("Secret")
    assert secret["metadata"]["name"] == "chatpop-dev"
    assert "BEGIN PRIVATE KEY" in secret["stringData"]["identity-signing-key.pem"]
    assert len(secret["stringData"]["access-code-key"]) >= 32
    assert {component("postgres"), component("redis")} <= rendered.names("Deployment")
    env = _env(_containers(rendered.get("Deployment", component("messaging")))[0])
    assert env["DATABASE_URL"]["value"] == "postgresql://chatpop@chatpop-postgres:5432/chatpop"
    assert env["REDIS_URL"]["value"] == "redis://chatpop-redis:6379/0"
    assert {component("prometheus"), component("grafana")} <= rendered.names("Deployment")


# -- hooks, ingress, dashboards -----------------------------------------------------------------


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(renderings: dict[str, Rendered]) -> None:
    job = renderings["default"].get("Job", component("migrations"))
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    (container,) = _containers(job)
    assert container["args"] == ["python", "-m", "chatpop_common.migrate"]
    assert "DATABASE_URL" in _env(container)
    # With in-chart dev datastores a hook would run before Postgres exists: an ordinary Job then.
    dev_job = renderings["dev"].get("Job", component("migrations"))
    assert "helm.sh/hook" not in dev_job["metadata"].get("annotations", {})


def test_helm_test_checks_every_service(renderings: dict[str, Rendered]) -> None:
    pod = renderings["default"].get("Pod", component("health-check"))
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = _containers(pod)
    args = container["args"]
    assert args[:2] == ["python", "/app/bin/health_check.py"]
    for name in GRPC_SERVICES:
        service = renderings["default"].get("Service", component(name))
        port = service["spec"]["ports"][0]["port"]
        assert f"--grpc={name}={component(name)}:{port}" in args
    assert f"--http=edge=http://{component('edge')}:8080/readyz" in args


def test_ingress_keeps_websockets_open_and_terminates_tls(renderings: dict[str, Rendered]) -> None:
    assert renderings["default"].of_kind("Ingress") == []
    (ingress,) = renderings["all-features"].of_kind("Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert ingress["spec"]["tls"] == [{"secretName": "chatpop-tls", "hosts": ["chat.example.com"]}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": component("edge"), "port": {"name": "http"}}


def test_ingress_without_hosts_is_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"ingress\.hosts"):
        chart.render({"ingress": {"enabled": True}}, name="chatpop")


def test_dashboards_ship_as_configmaps_for_the_grafana_sidecar(renderings: dict[str, Rendered]) -> None:
    files = sorted(p.name for p in (CHART / "files" / "dashboards").glob("*.json"))
    assert files == ["platform-overview.json", "realtime-chat.json", "service-red.json"]
    maps = [
        m
        for m in renderings["default"].of_kind("ConfigMap")
        if m["metadata"]["labels"].get("grafana_dashboard")
    ]
    assert sorted(name for m in maps for name in m["data"]) == files
    uids = set()
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"]["grafana_folder"] == "ChatPop"
        for text in config_map["data"].values():
            dashboard = json.loads(text)
            uids.add(dashboard["uid"])
            assert dashboard["panels"]
    assert len(uids) == len(files)


def test_dashboard_queries_are_valid_promql() -> None:
    from tests.deploy.promql import dashboard_queries

    queries = dashboard_queries()
    assert len(queries) > 30
    for where, query in queries:
        try:
            promql_parser.parse(query)
        except Exception as exc:
            pytest.fail(f"{where}: {query!r}: {exc}")


# -- network policies ---------------------------------------------------------------------------


def _policy(rendered: Rendered, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.get("NetworkPolicy", component(name))["spec"]
    return spec


def _egress_ports(spec: dict[str, Any]) -> set[int]:
    return {port["port"] for rule in spec.get("egress", []) for port in rule.get("ports", [])}


def _ingress_sources(spec: dict[str, Any]) -> set[str]:
    """Components allowed in on the main port (not the metrics port)."""
    return {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in spec.get("ingress") or []
        if all(port["port"] != "metrics" for port in rule.get("ports", []))
        for peer in rule.get("from", [])
        if "podSelector" in peer
    }


@pytest.mark.parametrize(
    "scenario", ["default", "dev", "all-features", "external-datastores", "network-policies"]
)
def test_network_policies_deny_by_default_and_allow_only_the_call_graph(
    renderings: dict[str, Rendered], scenario: str
) -> None:
    rendered = renderings[scenario]
    deny = _policy(rendered, "default-deny")
    assert deny == {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/name": "chatpop", "app.kubernetes.io/instance": "chatpop"}
        },
        "policyTypes": ["Ingress", "Egress"],
    }
    values = load_values(*SCENARIOS[scenario])
    dev = values.get("dev", {}).get("datastores", {}).get("enabled", False)
    redis_port = 6379 if dev else values.get("redis", {}).get("port", 6379)
    postgres_port = 5432 if dev else values.get("postgres", {}).get("port", 5432)

    s3 = values.get("media", {}).get("s3", {})
    s3_port = s3.get("port", 443) if s3.get("bucket") else None

    for name in SERVICES:
        ports = _egress_ports(_policy(rendered, name))
        # Only payments may leave the cluster (Stripe), and the edge and messaging reach the object
        # store when media is on; only identity, messaging and rooms reach Redis.
        assert (443 in ports) == (name == "payments" or (s3_port == 443 and name in ("edge", "messaging"))), (
            name
        )
        if s3_port is not None:
            assert (s3_port in ports) == (
                name in ("edge", "messaging") or (s3_port == 443 and name == "payments")
            )
        assert (redis_port in ports) == (name in ("identity", "messaging", "rooms")), name
        assert (postgres_port in ports) == (name != "edge"), name

    assert _ingress_sources(_policy(rendered, "identity")) == {
        "edge",
        "rooms",
        "messaging",
        "payments",
        "health-check",
    }
    # identity asks rooms to forget a deleted account; rooms asks messaging to erase a room and to
    # forget participants (both from their outboxes).
    assert _ingress_sources(_policy(rendered, "rooms")) == {
        "edge",
        "identity",
        "messaging",
        "payments",
        "health-check",
    }
    assert _ingress_sources(_policy(rendered, "messaging")) == {"edge", "payments", "rooms", "health-check"}
    assert _ingress_sources(_policy(rendered, "payments")) == {"edge", "health-check"}
    assert _egress_ports(_policy(rendered, "migrations")) == {postgres_port}
    stripe = [rule for rule in _policy(rendered, "payments")["egress"] if rule["ports"][0]["port"] == 443]
    assert stripe[0]["to"][0]["ipBlock"]["except"] == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]


def test_dev_datastores_accept_only_their_clients(renderings: dict[str, Rendered]) -> None:
    rendered = renderings["network-policies"]
    assert _ingress_sources(_policy(rendered, "redis")) == {"identity", "messaging", "rooms"}
    assert _ingress_sources(_policy(rendered, "postgres")) == {
        "identity",
        "rooms",
        "messaging",
        "payments",
        "migrations",
    }


def test_external_datastore_destinations_narrow_the_egress(renderings: dict[str, Rendered]) -> None:
    spec = _policy(renderings["external-datastores"], "messaging")
    by_port = {rule["ports"][0]["port"]: rule for rule in spec["egress"]}
    assert by_port[5433]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    assert by_port[6380]["to"] == [{"ipBlock": {"cidr": "10.20.1.0/24"}}]


def test_the_object_store_destination_narrows_the_egress_of_the_edge_and_messaging(
    renderings: dict[str, Rendered],
) -> None:
    rendered = renderings["external-datastores"]
    s3_rules = {
        name: [rule for rule in _policy(rendered, name)["egress"] if rule["ports"][0]["port"] == 8333]
        for name in SERVICES
    }
    assert s3_rules["edge"] == [
        {"ports": [{"protocol": "TCP", "port": 8333}], "to": [{"ipBlock": {"cidr": "10.20.2.0/24"}}]}
    ]
    # messaging also asks the SeaweedFS master to vacuum.
    assert s3_rules["messaging"] == [
        {
            "ports": [{"protocol": "TCP", "port": 8333}, {"protocol": "TCP", "port": 9333}],
            "to": [{"ipBlock": {"cidr": "10.20.2.0/24"}}],
        }
    ]
    for name in ("identity", "rooms", "payments"):
        assert s3_rules[name] == [], name
    assert 9333 not in _egress_ports(_policy(rendered, "edge"))


def test_policies_are_on_by_default_and_off_only_when_asked(
    chart: helm.Chart, renderings: dict[str, Rendered]
) -> None:
    for scenario in SCENARIOS:
        assert renderings[scenario].get("NetworkPolicy", component("default-deny")), scenario
    off = render(chart, {"networkPolicy": {"enabled": False}}, "policies-off")
    assert off.of_kind("NetworkPolicy") == []


def test_another_release_name_keeps_every_reference_consistent(chart: helm.Chart) -> None:
    files = chart.render({}, name="team-chat", namespace=NAMESPACE, is_install=True)
    objects = [
        o for path, text in files.items() if path.endswith(".yaml") for o in yaml.safe_load_all(text) if o
    ]
    services = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    assert services == {f"team-chat-chatpop-{name}" for name in SERVICES}
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for name in GRPC_SERVICES:
            host = _env(container)[f"{name.upper()}_ADDR"]["value"].split(":")[0]
            assert host in services


# -- an external Redis Cluster and Postgres ------------------------------------------------------

REDIS_CLIENTS = ("identity", "rooms", "messaging")


def test_an_external_redis_cluster_reaches_its_three_clients_as_seed_nodes(
    renderings: dict[str, Rendered],
) -> None:
    rendered = renderings["redis-cluster"]
    for name in SERVICES:
        env = _env(_containers(rendered.get("Deployment", component(name)))[0])
        if name in REDIS_CLIENTS:
            ref = env["REDIS_URL"]["valueFrom"]["secretKeyRef"]
            # The Secret's value lists the seed nodes, comma-separated.
            assert (ref["name"], ref["key"]) == ("chatpop-redis-cluster", "seeds"), name
            assert env["REDIS_CLUSTER"] == {"name": "REDIS_CLUSTER", "value": "true"}, name
        else:
            assert "REDIS_URL" not in env and "REDIS_CLUSTER" not in env, name
    # A single Redis (every other scenario) sets no REDIS_CLUSTER at all.
    for scenario in ("default", "dev", "external-datastores"):
        for name in REDIS_CLIENTS:
            env = _env(_containers(renderings[scenario].get("Deployment", component(name)))[0])
            assert "REDIS_CLUSTER" not in env, (scenario, name)


def test_an_external_postgres_comes_from_its_secret_for_services_and_migrations(
    renderings: dict[str, Rendered],
) -> None:
    rendered = renderings["redis-cluster"]
    containers = [_containers(rendered.get("Deployment", component(name)))[0] for name in GRPC_SERVICES]
    containers.append(_containers(rendered.get("Job", component("migrations")))[0])
    for container in containers:
        ref = _env(container)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("chatpop-postgres", "dsn")
    assert rendered.of_kind("Secret") == []
    assert not {component("postgres"), component("redis")} & rendered.names("Deployment")
    assert _egress_ports(_policy(rendered, "migrations")) == {6432}


def test_redis_cluster_clients_reach_every_node_on_its_client_ports_only(
    chart: helm.Chart, renderings: dict[str, Rendered]
) -> None:
    rendered = renderings["redis-cluster"]
    node_ports = {6379, 6380, 6381}
    for name in SERVICES:
        spec = _policy(rendered, name)
        rules = [rule for rule in spec["egress"] if {p["port"] for p in rule["ports"]} & node_ports]
        if name not in REDIS_CLIENTS:
            assert rules == [], name
            continue
        (rule,) = rules
        # Every node's client port, to the cluster's addresses; never a bus port (port + 10000).
        assert {p["port"] for p in rule["ports"]} == node_ports, name
        assert rule["to"] == [{"ipBlock": {"cidr": "10.30.1.0/24"}}, {"ipBlock": {"cidr": "10.30.2.0/24"}}]
        assert not {port + 10000 for port in node_ports} & _egress_ports(spec), name
        postgres = [r for r in spec["egress"] if r["ports"][0]["port"] == 6432]
        assert postgres[0]["to"] == [{"ipBlock": {"cidr": "10.30.0.0/24"}}]
    # redis.port repeated in extraPorts is listed once.
    values = load_values(*SCENARIOS["redis-cluster"])
    values["redis"]["extraPorts"] = [6379, 6380]
    spec = _policy(render(chart, values), "rooms")
    (rule,) = [rule for rule in spec["egress"] if rule["ports"][0]["port"] == 6379]
    assert [p["port"] for p in rule["ports"]] == [6379, 6380]


def test_a_redis_cluster_needs_an_external_cluster(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"redis\.cluster needs an external Redis Cluster"):
        chart.render(load_values("values-dev.yaml") | {"redis": {"cluster": True}}, name="chatpop")


@pytest.mark.parametrize(
    "redis",
    [
        {"cluster": "yes"},
        {"extraPorts": [0]},
        {"extraPorts": [6380, 6380]},
        {"extraPorts": "6380"},
        {"seeds": []},
    ],
    ids=lambda v: json.dumps(v, sort_keys=True),
)
def test_the_schema_keeps_the_redis_cluster_values_strict(chart: helm.Chart, redis: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema({"redis": redis})
