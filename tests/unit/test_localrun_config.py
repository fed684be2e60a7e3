"""`make run`'s configuration, preflight checks, local secrets and service wiring."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chatpop_common.devstack import SeaweedS3, free_port
from chatpop_common.localrun import (
    LocalRunError,
    Ports,
    banner,
    ensure_ports_free,
    ensure_secrets,
    missing_packages,
    postgres_root,
    private_s3_wanted,
    redact,
    redis_cluster_wanted,
    run,
    service_specs,
)
from chatpop_common.processes import GrpcHealth, HttpReady


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_default_ports_follow_the_services_readme() -> None:
    ports = Ports.from_env({})
    assert dict(ports.service) == {
        "identity": 7101,
        "rooms": 7102,
        "messaging": 7103,
        "payments": 7104,
        "edge": 8080,
    }
    assert dict(ports.metrics) == {
        "edge": 9100,
        "identity": 9101,
        "rooms": 9102,
        "messaging": 9103,
        "payments": 9104,
    }
    assert (ports.postgres, ports.redis) == (55432, 56379)
    assert dict(ports.s3) == {
        "s3": 58333,
        "master": 58334,
        "volume": 58335,
        "filer": 58336,
        "s3_grpc": 58337,
        "master_grpc": 58338,
        "volume_grpc": 58339,
        "filer_grpc": 58340,
    }


def test_the_private_s3_ports_follow_s3_port_and_each_moves_alone() -> None:
    ports = Ports.from_env({"S3_PORT": "18333", "S3_MASTER_GRPC_PORT": "19333"})
    assert ports.s3["s3"] == 18333
    assert (ports.s3["master"], ports.s3["filer_grpc"]) == (18334, 18340)
    assert ports.s3["master_grpc"] == 19333
    assert ("S3 master gRPC", 19333, "S3_MASTER_GRPC_PORT") in ports.labelled()
    with pytest.raises(LocalRunError, match="S3_VOLUME_PORT"):
        Ports.from_env({"S3_VOLUME_PORT": "8080"})
    with pytest.raises(LocalRunError, match="S3_PORT=65530"):
        Ports.from_env({"S3_PORT": "65530"})
    free = Ports.free()
    assert len({port for _, port, _ in free.labelled()}) == len(free.labelled())


def test_make_run_starts_its_own_s3_only_when_no_s3_is_named() -> None:
    assert private_s3_wanted({})
    assert not private_s3_wanted({"S3_ENDPOINT_URL": "https://s3.example.com", "S3_BUCKET": "media"})
    assert not private_s3_wanted({"S3_BUCKET": "media"})
    # An empty bucket is a choice too: media off.
    assert not private_s3_wanted({"S3_BUCKET": ""})


def test_ports_are_overridable_by_environment() -> None:
    ports = Ports.from_env(
        {"EDGE_PORT": "18080", "ROOMS_METRICS_PORT": "19102", "POSTGRES_PORT": "15432", "REDIS_PORT": "16379"}
    )
    assert ports.service["edge"] == 18080
    assert ports.metrics["rooms"] == 19102
    assert (ports.postgres, ports.redis) == (15432, 16379)
    assert ports.address("rooms") == "127.0.0.1:7102"


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-1"])
def test_a_bad_port_names_its_variable(value: str) -> None:
    with pytest.raises(LocalRunError, match=f"EDGE_PORT must be a port number.*{value}"):
        Ports.from_env({"EDGE_PORT": value})


def test_two_things_on_one_port_are_refused() -> None:
    with pytest.raises(LocalRunError, match="7101"):
        Ports.from_env({"ROOMS_PORT": "7101"})


def test_a_busy_port_is_refused_with_the_variable_that_moves_it(listening: int) -> None:
    with pytest.raises(LocalRunError) as refused:
        ensure_ports_free([("Postgres", listening, "POSTGRES_PORT"), ("edge", free_port(), "EDGE_PORT")])
    message = str(refused.value)
    assert f"{listening} (Postgres): set POSTGRES_PORT to a free port" in message
    assert "DATABASE_URL" in message
    assert "EDGE_PORT" not in message


def test_a_busy_s3_port_names_the_way_to_another_s3(listening: int) -> None:
    with pytest.raises(LocalRunError) as refused:
        ensure_ports_free([("S3 filer", listening, "S3_FILER_PORT")])
    message = str(refused.value)
    assert f"{listening} (S3 filer): set S3_FILER_PORT to a free port" in message
    assert "S3_ENDPOINT_URL" in message


def test_missing_datastore_binaries_name_the_debian_packages(tmp_path: Path) -> None:
    missing = missing_packages(
        need_postgres=True, need_redis=True, search_path=str(tmp_path), postgres_lib=tmp_path
    )
    assert missing == ["postgresql", "redis-server"]
    assert missing_packages(need_postgres=False, need_redis=False, search_path=str(tmp_path)) == []


def test_postgres_binaries_are_found_under_the_debian_library_folder(tmp_path: Path) -> None:
    bin_dir = tmp_path / "15" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres", "psql"):
        (bin_dir / name).write_text("")
    assert missing_packages(need_postgres=True, need_redis=False, search_path="", postgres_lib=tmp_path) == []


def test_make_run_refuses_clearly_without_redis_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    out = io.StringIO()
    status = run(
        {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "CHATPOP_DATA_DIR": str(tmp_path / "data")},
        out=out,
    )
    assert status == 1
    assert "redis-server not found" in out.getvalue()
    assert "sudo apt-get install -y redis-server" in out.getvalue()
    assert not (tmp_path / "data").exists()


def test_make_run_refuses_a_busy_port_before_starting_anything(tmp_path: Path, listening: int) -> None:
    out = io.StringIO()
    status = run(
        {
            "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "EDGE_PORT": str(listening),
            "CHATPOP_DATA_DIR": str(tmp_path / "data"),
        },
        out=out,
    )
    assert status == 1
    assert f"{listening} (edge): set EDGE_PORT to a free port" in out.getvalue()
    assert "stopped" not in out.getvalue()
    assert not (tmp_path / "data").exists()


def test_make_run_reports_a_bad_port_variable(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run({"REDIS_PORT": "many", "CHATPOP_DATA_DIR": str(tmp_path)}, out=out) == 1
    assert "REDIS_PORT must be a port number" in out.getvalue()


def test_secrets_are_private_and_kept_between_runs(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    first = ensure_secrets(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(first.signing_key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "ip-hash-key").stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "access-code-key").stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(first.signing_key_file.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert len(first.ip_hash_key) >= 32
    assert len(first.access_code_key) >= 32 and first.access_code_key != first.ip_hash_key

    pem = first.signing_key_file.read_bytes()
    second = ensure_secrets(directory)
    assert second == first
    assert second.signing_key_file.read_bytes() == pem
    assert sorted(p.name for p in directory.iterdir()) == [
        "access-code-key",
        "identity-signing-key.pem",
        "ip-hash-key",
        "master-keys.json",
        "media-url-key",
        "s3-access-key",
        "s3-secret-key",
        "service-token-secret",
    ]
    for name in (
        "service-token-secret",
        "media-url-key",
        "s3-access-key",
        "s3-secret-key",
        "master-keys.json",
    ):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    # messaging's master keys: one version, 32 bytes, kept between runs.
    master = json.loads((directory / "master-keys.json").read_text())
    assert master["current"] == 1 and len(base64.b64decode(master["keys"]["1"])) == 32
    assert first.master_keys_file == directory / "master-keys.json"
    assert len(first.service_token_secret) >= 32
    assert len(first.media_url_key) >= 32
    assert first.media_url_key not in (first.service_token_secret, first.ip_hash_key)
    assert len(first.s3_access_key) >= 16 and len(first.s3_secret_key) >= 32


def test_a_damaged_signing_key_is_reported_not_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    ensure_secrets(directory)
    (directory / "identity-signing-key.pem").write_text("not a key")
    with pytest.raises(LocalRunError, match="delete it to get a new one"):
        ensure_secrets(directory)
    assert (directory / "identity-signing-key.pem").read_text() == "not a key"


def test_services_are_wired_to_each_other(tmp_path: Path) -> None:
    secrets = ensure_secrets(tmp_path / "secrets")
    ports = Ports.from_env({"EDGE_PORT": "18080"})
    specs = service_specs(
        {"STRIPE_SECRET_KEY": "sk_test_x", "GRPC_PORT": "1", "PYTHONPATH": "/extra"},
        ports,
        "postgresql://chatpop@127.0.0.1:55432/chatpop",
        "redis://127.0.0.1:56379/0",
        secrets,
        repo=tmp_path,
    )
    by_name = {s.name: s for s in specs}
    assert [s.name for s in specs] == ["identity", "rooms", "messaging", "payments", "edge"]
    for name, port in (("identity", 7101), ("rooms", 7102), ("messaging", 7103), ("payments", 7104)):
        env = by_name[name].env
        assert env["GRPC_PORT"] == str(port)
        assert env["METRICS_PORT"] == str(ports.metrics[name])
        assert by_name[name].ready == GrpcHealth(f"127.0.0.1:{port}")
        assert list(by_name[name].argv[-2:]) == ["-m", f"chatpop_{name}"]
    for spec in specs:
        assert spec.env["DATABASE_URL"] == "postgresql://chatpop@127.0.0.1:55432/chatpop"
        assert spec.env["REDIS_URL"] == "redis://127.0.0.1:56379/0"
        assert spec.env["IDENTITY_ADDR"] == "127.0.0.1:7101"
        assert spec.env["PAYMENTS_ADDR"] == "127.0.0.1:7104"
        assert spec.env["LOG_FORMAT"] == "text"
        assert spec.env["STRIPE_SECRET_KEY"] == "sk_test_x"
        assert spec.env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "services" / "common")
        assert spec.env["PYTHONPATH"].endswith(os.pathsep + "/extra")
    assert by_name["identity"].env["IDENTITY_SIGNING_KEY_FILE"] == str(secrets.signing_key_file)
    assert by_name["rooms"].env["ACCESS_CODE_KEY"] == secrets.access_code_key
    assert "ACCESS_CODE_KEY" not in by_name["edge"].env
    # The edge holds a service credential too (it asks messaging for media records as `edge`).
    for name in ("identity", "rooms", "messaging", "payments", "edge"):
        assert by_name[name].env["SERVICE_TOKEN_SECRET"] == secrets.service_token_secret
    assert by_name["edge"].env["MEDIA_URL_KEY"] == secrets.media_url_key
    assert "MEDIA_URL_KEY" not in by_name["messaging"].env
    # messaging alone holds the master keys.
    assert by_name["messaging"].env["MASTER_KEYS_FILE"] == str(secrets.master_keys_file)
    assert [name for name in by_name if "MASTER_KEYS_FILE" in by_name[name].env] == ["messaging"]
    # No private S3 given: nothing S3 is set (base_env's S3_* would pass through as they are).
    assert not any(name.startswith("S3_") for spec in specs for name in spec.env)
    edge = by_name["edge"].env
    assert (edge["HTTP_PORT"], edge["METRICS_PORT"], edge["HTTP_HOST"]) == ("18080", "9100", "127.0.0.1")
    assert edge["PUBLIC_URL"] == "http://localhost:18080"
    # The links identity mails point at the edge.
    assert by_name["identity"].env["PUBLIC_URL"] == "http://localhost:18080"
    assert edge["IP_HASH_KEY"] == secrets.ip_hash_key
    assert by_name["edge"].ready == HttpReady("http://127.0.0.1:18080/readyz")


def test_a_private_s3_reaches_messaging_and_the_edge(tmp_path: Path) -> None:
    secrets = ensure_secrets(tmp_path / "secrets")
    server = SeaweedS3(
        datadir=tmp_path / "s3",
        ports=dict(Ports.from_env({}).s3),
        access_key=secrets.s3_access_key,
        secret_key=secrets.s3_secret_key,
    )
    specs = {
        s.name: s.env
        for s in service_specs(
            {}, Ports.from_env({}), "postgresql://db", "redis://cache", secrets, s3_env=server.env()
        )
    }
    expected = {
        "S3_ENDPOINT_URL": "http://127.0.0.1:58333",
        "S3_REGION": "us-east-1",
        "S3_BUCKET": "chatpop-media",
        "S3_ACCESS_KEY_ID": secrets.s3_access_key,
        "S3_SECRET_ACCESS_KEY": secrets.s3_secret_key,
        "S3_ADDRESSING_STYLE": "path",
    }
    assert {k: v for k, v in specs["edge"].items() if k.startswith("S3_")} == expected
    assert {k: v for k, v in specs["messaging"].items() if k.startswith("S3_")} == {
        **expected,
        "S3_VACUUM_URL": "http://127.0.0.1:58334",
    }
    for name in ("identity", "rooms", "payments"):
        assert not any(k.startswith("S3_") for k in specs[name])


def test_mail_settings_reach_identity_and_the_banner_says_where_mail_goes(tmp_path: Path) -> None:
    secrets = ensure_secrets(tmp_path / "secrets")
    ports = Ports.from_env({})
    smtp_url = "smtp://chatpop:s3cret@mail.example.com:587"
    env = {
        "SMTP_URL": smtp_url,
        "MAIL_FROM": "ChatPop <no-reply@example.com>",
        "PUBLIC_URL": "https://chat.example.com",
    }
    specs = {s.name: s for s in service_specs(env, ports, "postgresql://db", "redis://cache", secrets)}
    identity = specs["identity"].env
    assert (identity["SMTP_URL"], identity["MAIL_FROM"], identity["PUBLIC_URL"]) == (
        smtp_url,
        "ChatPop <no-reply@example.com>",
        "https://chat.example.com",
    )
    assert specs["edge"].env["PUBLIC_URL"] == "https://chat.example.com"

    shown = dict(database_url="postgresql://db", redis_url="redis://cache", data_note="", stripe=False)
    mailing = banner(ports, **shown, edge_host="127.0.0.1", smtp_url=smtp_url)
    assert "mail        smtp://chatpop:***@mail.example.com:587" in mailing
    assert "s3cret" not in mailing
    logging_only = banner(ports, **shown, edge_host="127.0.0.1")
    assert "password reset links are printed in identity's log" in logging_only


def test_printed_urls_hide_passwords() -> None:
    assert redact("postgresql://app:s3cret@db:5432/chatpop") == "postgresql://app:***@db:5432/chatpop"
    assert redact("redis://127.0.0.1:56379/0") == "redis://127.0.0.1:56379/0"


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None, reason="only root hands Postgres to its own account"
)
def test_postgres_data_moves_out_of_a_folder_postgres_cannot_enter() -> None:
    if subprocess.run(["id", "postgres"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no postgres account")
    # pytest's own tmp_path sits in a root-only folder, so build one the postgres account can enter.
    base = Path(tempfile.mkdtemp(prefix="chatpop-localrun-", dir="/tmp"))
    fallback: Path | None = None
    try:
        base.chmod(0o755)
        reachable = base / "open" / ".data"
        reachable.mkdir(parents=True)
        for folder in (base / "open", reachable):
            folder.chmod(0o755)
        assert postgres_root(reachable) == reachable

        private = base / "private" / ".data"
        private.mkdir(parents=True)
        (base / "private").chmod(0o700)
        fallback = postgres_root(private)
        assert fallback.parent == Path("/var/tmp")
        assert fallback.name.startswith("chatpop-")
        assert postgres_root(private) == fallback
        assert stat.S_IMODE(fallback.stat().st_mode) == 0o755
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if fallback is not None and fallback.parent == Path("/var/tmp"):
            shutil.rmtree(fallback, ignore_errors=True)


# --- a private Redis Cluster (REDIS_CLUSTER=1) -----------------------------------------------------


def test_the_private_redis_cluster_has_fixed_consecutive_ports_that_move_together() -> None:
    ports = Ports.from_env({})
    assert ports.redis_cluster_ports == [56390, 56391, 56392]
    # The cluster bus below the kernel's ephemeral range (32768 and up by default).
    assert ports.redis_cluster_bus_ports == [26390, 26391, 26392]
    assert ("Redis Cluster node 2", 56391, "REDIS_CLUSTER_PORT") in ports.labelled()
    assert ("Redis Cluster bus 3", 26392, "REDIS_CLUSTER_BUS_PORT") in ports.labelled()
    # A block is moved by its first port.
    assert ports.variables()["REDIS_CLUSTER_PORT"] == "56390"
    assert ports.variables()["REDIS_CLUSTER_BUS_PORT"] == "26390"
    assert Ports.from_env(ports.variables()) == ports

    moved = Ports.from_env({"REDIS_CLUSTER_PORT": "17000", "REDIS_CLUSTER_BUS_PORT": "27000"})
    assert (moved.redis_cluster_ports, moved.redis_cluster_bus_ports) == (
        [17000, 17001, 17002],
        [27000, 27001, 27002],
    )
    with pytest.raises(LocalRunError, match="REDIS_CLUSTER_PORT=65534 leaves no room"):
        Ports.from_env({"REDIS_CLUSTER_PORT": "65534"})
    with pytest.raises(LocalRunError, match="REDIS_CLUSTER_BUS_PORT must be a port number"):
        Ports.from_env({"REDIS_CLUSTER_BUS_PORT": "bus"})
    # A block overlapping another port is refused like any other clash.
    with pytest.raises(LocalRunError, match="REDIS_CLUSTER_PORT=56379 is also used by REDIS_PORT"):
        Ports.from_env({"REDIS_CLUSTER_PORT": "56377"})

    free = Ports.free()
    assert len({port for _, port, _ in free.labelled()}) == len(free.labelled())
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(free.redis_cluster_bus_ports) < low
    assert Ports.from_env(free.variables()) == free


@pytest.mark.parametrize(
    ("value", "wanted"),
    [("", False), ("0", False), ("false", False), ("1", True), ("true", True), ("YES", True)],
)
def test_redis_cluster_is_a_yes_or_no(value: str, wanted: bool) -> None:
    assert redis_cluster_wanted({"REDIS_CLUSTER": value}) is wanted


def test_a_redis_cluster_setting_that_is_neither_is_reported(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run({"REDIS_CLUSTER": "cluster please", "CHATPOP_DATA_DIR": str(tmp_path / "data")}, out=out) == 1
    assert "REDIS_CLUSTER must be 1 or 0 (true or false), not 'cluster please'" in out.getvalue()
    assert not (tmp_path / "data").exists()


def test_a_private_cluster_needs_redis_cli(tmp_path: Path) -> None:
    (tmp_path / "redis-server").write_text("")
    (tmp_path / "redis-server").chmod(0o755)
    path = str(tmp_path)
    assert missing_packages(need_postgres=False, need_redis=True, search_path=path) == []
    assert missing_packages(need_postgres=False, need_redis=True, need_redis_cli=True, search_path=path) == [
        "redis-tools"
    ]


def test_a_busy_cluster_port_is_refused_before_anything_starts(tmp_path: Path, listening: int) -> None:
    out = io.StringIO()
    env = {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "REDIS_CLUSTER": "1",
        "REDIS_CLUSTER_PORT": str(listening - 1),
        "CHATPOP_DATA_DIR": str(tmp_path / "data"),
    }
    # Every other port free too (S3's included: a free port handed to another variable may be one of
    # S3's defaults, which would be refused as used twice before the cluster's port is looked at).
    for _what, port, variable in Ports.free().labelled():
        if not variable.startswith("REDIS_CLUSTER"):
            env.setdefault(variable, str(port))
    env["S3_BUCKET"] = ""
    assert run(env, out=out) == 1
    assert f"{listening} (Redis Cluster node 2): set REDIS_CLUSTER_PORT to a free port" in out.getvalue()
    assert "REDIS_URL" in out.getvalue()
    assert not (tmp_path / "data").exists()
    # Without REDIS_CLUSTER the cluster's ports are nobody's business (only the busy edge port is).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as edge:
        edge.bind(("127.0.0.1", 0))
        edge.listen()
        env |= {
            "REDIS_CLUSTER": "0",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "EDGE_PORT": str(edge.getsockname()[1]),
        }
        out = io.StringIO()
        assert run(env, out=out) == 1
    assert "set EDGE_PORT to a free port" in out.getvalue()
    assert "Redis Cluster" not in out.getvalue()


def test_the_services_get_redis_cluster_and_the_seed_nodes(tmp_path: Path) -> None:
    secrets = ensure_secrets(tmp_path / "secrets")
    ports = Ports.from_env({})
    seeds = "redis://127.0.0.1:56390,redis://127.0.0.1:56391,redis://127.0.0.1:56392"
    specs = service_specs(
        {"REDIS_CLUSTER": "1"}, ports, "postgresql://db", seeds, secrets, redis_cluster=True
    )
    for spec in specs:
        assert (spec.env["REDIS_CLUSTER"], spec.env["REDIS_URL"]) == ("true", seeds), spec.name
    single = service_specs(
        {"REDIS_CLUSTER": "0"}, ports, "postgresql://db", "redis://cache", secrets, redis_cluster=False
    )
    assert {spec.env["REDIS_CLUSTER"] for spec in single} == {"false"}
    # Without a word on it, whatever the caller's environment says reaches the services.
    inherited = service_specs({"REDIS_CLUSTER": "true"}, ports, "postgresql://db", seeds, secrets)
    assert {spec.env["REDIS_CLUSTER"] for spec in inherited} == {"true"}


def test_the_banner_names_the_cluster_and_hides_its_passwords() -> None:
    seeds = "redis://:s3cret@10.0.0.1:6379,redis://:s3cret@10.0.0.2:6379"
    assert redact(seeds) == "redis://:***@10.0.0.1:6379,redis://:***@10.0.0.2:6379"
    shown = banner(
        Ports.from_env({}),
        database_url="postgresql://db",
        redis_url=seeds,
        data_note="",
        stripe=False,
        edge_host="127.0.0.1",
        redis_note="Redis Cluster",
    )
    assert "  Redis       redis://:***@10.0.0.1:6379,redis://:***@10.0.0.2:6379  (Redis Cluster)" in shown
    assert "s3cret" not in shown
