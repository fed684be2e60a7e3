"""`make run`: the whole platform on localhost (`python -m chatpop_common.localrun`).

Unless DATABASE_URL / REDIS_URL are set, a private Postgres (port 55432) and Redis (port 56379)
run under `.data/` in the repository and keep their data between runs. With REDIS_CLUSTER=1 (and no
REDIS_URL) a private 3-master Redis Cluster takes the single Redis's place: nodes on ports
56390-56392 (REDIS_CLUSTER_PORT and the two after it), cluster bus on 26390-26392
(REDIS_CLUSTER_BUS_PORT, below the kernel's ephemeral range), data and nodes.conf under
`.data/redis-cluster/`, so a restart finds the same cluster again; REDIS_CLUSTER=1 with a REDIS_URL
(one or more seed nodes, comma-separated) uses that cluster. Every service gets REDIS_CLUSTER=true.
Media go to a private S3 (SeaweedFS, `.data/s3`, S3 on port 58333) unless S3_ENDPOINT_URL or
S3_BUCKET is set: then the S3_* variables reach the edge and messaging as they are (`S3_BUCKET=`
with nothing runs without media). Secrets for local use (the identity signing key, the IP hash key,
the access-code key, the service token secret, the media URL key and the private S3's access key
and secret) are generated once under `.data/secrets`. Every migration is applied, then identity,
rooms, messaging, payments and edge start as child processes with readable logs. A service that
stops on its own is started again after a delay that doubles with each failure in a row
(CRASH_BACKOFF), while the others, Postgres, Redis and S3 keep running. Only at start-up does a
service stop everything: when its settings are invalid (trying again cannot mend them) or it is not
ready in time. Ctrl-C or SIGTERM stops the services in reverse order, then S3, Redis (or the Redis
Cluster) and Postgres.

Ports can be moved with EDGE_PORT, IDENTITY_PORT, ROOMS_PORT, MESSAGING_PORT, PAYMENTS_PORT,
<SERVICE>_METRICS_PORT, POSTGRES_PORT, REDIS_PORT, REDIS_CLUSTER_PORT, REDIS_CLUSTER_BUS_PORT and
S3_PORT; the private S3's inner ports follow S3_PORT (S3_PORT+1 … +7: master, volume, filer, then
the gRPC ports of S3, master, volume and filer), each movable too with S3_MASTER_PORT,
S3_VOLUME_PORT, S3_FILER_PORT, S3_GRPC_PORT, S3_MASTER_GRPC_PORT, S3_VOLUME_GRPC_PORT and
S3_FILER_GRPC_PORT. The data folder moves with CHATPOP_DATA_DIR.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chatpop_common.devstack import SEAWEED_PORTS, Postgres, Redis, RedisCluster, SeaweedS3, free_ports
from chatpop_common.migrate import SERVICES as MIGRATED
from chatpop_common.migrate import migrate
from chatpop_common.ports import claim_ports
from chatpop_common.processes import (
    GrpcHealth,
    HttpReady,
    RestartBackoff,
    ServiceSpec,
    StartupError,
    Supervisor,
    python_module,
)
from chatpop_common.settings import INVALID_SETTINGS_EXIT

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVICE_DIRS = ("common", "identity", "rooms", "messaging", "payments", "edge")
# Start order; stopping runs in reverse, so the edge goes first and identity last.
SERVICES = ("identity", "rooms", "messaging", "payments", "edge")
GRPC_SERVICES = SERVICES[:-1]
DEFAULT_PORTS: dict[str, int] = {
    "identity": 7101,
    "rooms": 7102,
    "messaging": 7103,
    "payments": 7104,
    "edge": 8080,
}
DEFAULT_METRICS_PORTS: dict[str, int] = {
    "edge": 9100,
    "identity": 9101,
    "rooms": 9102,
    "messaging": 9103,
    "payments": 9104,
}
DEFAULT_POSTGRES_PORT = 55432
DEFAULT_REDIS_PORT = 56379
# The private Redis Cluster (REDIS_CLUSTER=1): this many masters on consecutive ports from
# REDIS_CLUSTER_PORT, their cluster bus on consecutive ports from REDIS_CLUSTER_BUS_PORT. The bus
# ports lie below the kernel's ephemeral range (usually 32768 and up), so no outgoing connection
# holds one when the cluster restarts; a node's default bus port (its port + 10000) would not fit.
REDIS_CLUSTER_MASTERS = 3
DEFAULT_REDIS_CLUSTER_PORT = 56390
DEFAULT_REDIS_CLUSTER_BUS_PORT = 26390
DEFAULT_S3_PORT = 58333
# The private S3's ports: (what, variable that moves it), in SEAWEED_PORTS order; by default each
# is S3_PORT plus its place in this list.
S3_PORT_VARIABLES: dict[str, tuple[str, str]] = {
    "s3": ("S3", "S3_PORT"),
    "master": ("S3 master", "S3_MASTER_PORT"),
    "volume": ("S3 volume", "S3_VOLUME_PORT"),
    "filer": ("S3 filer", "S3_FILER_PORT"),
    "s3_grpc": ("S3 gRPC", "S3_GRPC_PORT"),
    "master_grpc": ("S3 master gRPC", "S3_MASTER_GRPC_PORT"),
    "volume_grpc": ("S3 volume gRPC", "S3_VOLUME_GRPC_PORT"),
    "filer_grpc": ("S3 filer gRPC", "S3_FILER_GRPC_PORT"),
}
STARTUP_TIMEOUT = 90.0
# A crashed service comes back after 1 s, then 2, 4, 8, 16 and 30 s at most while it keeps failing;
# one that ran a minute before it stopped starts over at 1 s.
CRASH_BACKOFF = RestartBackoff(initial=1.0, factor=2.0, maximum=30.0, reset_after=60.0)
TEND_INTERVAL = 0.2
SIGNING_KEY_FILE = "identity-signing-key.pem"
IP_HASH_KEY_FILE = "ip-hash-key"
ACCESS_CODE_KEY_FILE = "access-code-key"
SERVICE_TOKEN_SECRET_FILE = "service-token-secret"
MEDIA_URL_KEY_FILE = "media-url-key"
S3_ACCESS_KEY_FILE = "s3-access-key"
S3_SECRET_KEY_FILE = "s3-secret-key"
# messaging's master keys (MASTER_KEYS_FILE): the JSON keyring its data keys are wrapped with.
MASTER_KEYS_FILE = "master-keys.json"
# The processes that ask identity for service tokens (and identity, which checks their proofs).
SERVICE_TOKEN_HOLDERS = ("identity", "rooms", "messaging", "payments", "edge")
# The services that keep media on S3 (S3_*).
S3_USERS = ("messaging", "edge")


class LocalRunError(RuntimeError):
    """Something the person running `make run` has to fix; the message says what."""


@dataclass(frozen=True)
class Ports:
    """Every port a local platform uses."""

    service: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    metrics: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_METRICS_PORTS))
    postgres: int = DEFAULT_POSTGRES_PORT
    redis: int = DEFAULT_REDIS_PORT
    s3: Mapping[str, int] = field(default_factory=lambda: _s3_ports({}))
    # The first node's port and the first bus port of the private Redis Cluster (REDIS_CLUSTER=1).
    redis_cluster: int = DEFAULT_REDIS_CLUSTER_PORT
    redis_cluster_bus: int = DEFAULT_REDIS_CLUSTER_BUS_PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        """Defaults from services/README.md, each overridable by `<NAME>_PORT` / `<NAME>_METRICS_PORT`."""
        service = {name: _port(env, f"{name.upper()}_PORT", port) for name, port in DEFAULT_PORTS.items()}
        metrics = {
            name: _port(env, f"{name.upper()}_METRICS_PORT", port)
            for name, port in DEFAULT_METRICS_PORTS.items()
        }
        ports = cls(
            service=service,
            metrics=metrics,
            postgres=_port(env, "POSTGRES_PORT", DEFAULT_POSTGRES_PORT),
            redis=_port(env, "REDIS_PORT", DEFAULT_REDIS_PORT),
            s3=_s3_ports(env),
            redis_cluster=_block(env, "REDIS_CLUSTER_PORT", DEFAULT_REDIS_CLUSTER_PORT),
            redis_cluster_bus=_block(env, "REDIS_CLUSTER_BUS_PORT", DEFAULT_REDIS_CLUSTER_BUS_PORT),
        )
        ports.check_distinct()
        return ports

    @classmethod
    def free(cls) -> Ports:
        """Free ports for everything (tests and benchmarks, which run beside a `make run`)."""
        ports = iter(free_ports(len(DEFAULT_PORTS) + len(DEFAULT_METRICS_PORTS) + 2 + len(SEAWEED_PORTS)))
        cluster, bus = _free_blocks(REDIS_CLUSTER_MASTERS, 2)
        return cls(
            service={name: next(ports) for name in DEFAULT_PORTS},
            metrics={name: next(ports) for name in DEFAULT_METRICS_PORTS},
            postgres=next(ports),
            redis=next(ports),
            s3={name: next(ports) for name in SEAWEED_PORTS},
            redis_cluster=cluster,
            redis_cluster_bus=bus,
        )

    @property
    def redis_cluster_ports(self) -> list[int]:
        return [self.redis_cluster + n for n in range(REDIS_CLUSTER_MASTERS)]

    @property
    def redis_cluster_bus_ports(self) -> list[int]:
        return [self.redis_cluster_bus + n for n in range(REDIS_CLUSTER_MASTERS)]

    def variables(self) -> dict[str, str]:
        """The environment that moves every port here (a block of ports by its first one)."""
        return {variable: str(port) for _what, port, variable in reversed(self.labelled())}

    @property
    def edge(self) -> int:
        return self.service["edge"]

    def labelled(self) -> list[tuple[str, int, str]]:
        """(what, port, variable that moves it) for every port."""
        items = [(name, port, f"{name.upper()}_PORT") for name, port in self.service.items()]
        items += [
            (f"{name} metrics", port, f"{name.upper()}_METRICS_PORT") for name, port in self.metrics.items()
        ]
        items += [("Postgres", self.postgres, "POSTGRES_PORT"), ("Redis", self.redis, "REDIS_PORT")]
        items += [
            (S3_PORT_VARIABLES[name][0], port, S3_PORT_VARIABLES[name][1]) for name, port in self.s3.items()
        ]
        items += [
            (f"Redis Cluster node {n + 1}", port, "REDIS_CLUSTER_PORT")
            for n, port in enumerate(self.redis_cluster_ports)
        ]
        items += [
            (f"Redis Cluster bus {n + 1}", port, "REDIS_CLUSTER_BUS_PORT")
            for n, port in enumerate(self.redis_cluster_bus_ports)
        ]
        return items

    def check_distinct(self) -> None:
        seen: dict[int, str] = {}
        for _what, port, variable in self.labelled():
            if port in seen:
                raise LocalRunError(f"{variable}={port} is also used by {seen[port]}; give each its own port")
            seen[port] = variable

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.service[service]}"


def _port(env: Mapping[str, str], variable: str, default: int) -> int:
    raw = env.get(variable, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise LocalRunError(f"{variable} must be a port number between 1 and 65535, not {raw!r}")
    return int(raw)


def _block(env: Mapping[str, str], variable: str, default: int) -> int:
    """The first of REDIS_CLUSTER_MASTERS consecutive ports."""
    first = _port(env, variable, default)
    if first + REDIS_CLUSTER_MASTERS - 1 > 65535:
        raise LocalRunError(
            f"{variable}={first} leaves no room for the {REDIS_CLUSTER_MASTERS - 1} ports after it; "
            "choose a lower one"
        )
    return first


def _free_blocks(size: int, count: int) -> list[int]:
    """The first ports of `count` blocks of `size` consecutive free ports, below the ephemeral range
    (a Redis Cluster's nodes and their bus ports, for tests that run beside a `make run`)."""
    return claim_ports(count, block=size)


def redis_cluster_wanted(env: Mapping[str, str]) -> bool:
    """REDIS_CLUSTER: 1/true/yes/on for a Redis Cluster (a private one unless REDIS_URL names one)."""
    raw = env.get("REDIS_CLUSTER", "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise LocalRunError(f"REDIS_CLUSTER must be 1 or 0 (true or false), not {env['REDIS_CLUSTER']!r}")


def _s3_ports(env: Mapping[str, str]) -> dict[str, int]:
    base = _port(env, "S3_PORT", DEFAULT_S3_PORT)
    if base + len(SEAWEED_PORTS) - 1 > 65535:
        raise LocalRunError(f"S3_PORT={base} leaves no room for the seven ports after it; choose a lower one")
    return {
        name: _port(env, S3_PORT_VARIABLES[name][1], base + offset)
        for offset, name in enumerate(SEAWEED_PORTS)
    }


def private_s3_wanted(env: Mapping[str, str]) -> bool:
    """Whether make run starts its own S3: only when neither S3_ENDPOINT_URL nor S3_BUCKET is set."""
    return "S3_ENDPOINT_URL" not in env and "S3_BUCKET" not in env


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like the servers themselves: a socket lingering in TIME_WAIT does not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def ensure_ports_free(wanted: Sequence[tuple[str, int, str]]) -> None:
    """Refuse clearly when a port is taken, naming who needs it and the variable that moves it."""
    busy = [(what, port, variable) for what, port, variable in wanted if port_in_use(port)]
    if busy:
        lines = [f"  {port} ({what}): set {variable} to a free port" for what, port, variable in busy]
        if any(what == "Postgres" or what.startswith("Redis") for what, _, _ in busy):
            lines.append("  or point DATABASE_URL / REDIS_URL at servers you already run")
        if any(what.startswith("S3") for what, _, _ in busy):
            lines.append(
                "  or point S3_ENDPOINT_URL / S3_BUCKET (and the other S3_* settings) at an S3 you run"
            )
        raise LocalRunError(
            "these ports are already in use (is another `make run` still running?):\n" + "\n".join(lines)
        )


# -- prerequisites ----------------------------------------------------------------------------

POSTGRES_BINARIES = ("initdb", "pg_ctl", "postgres", "psql")


def missing_packages(
    *,
    need_postgres: bool,
    need_redis: bool,
    need_redis_cli: bool = False,
    search_path: str | None = None,
    postgres_lib: Path = Path("/usr/lib/postgresql"),
) -> list[str]:
    """The Debian packages to install so that the datastores we have to start can run."""
    missing: list[str] = []
    if need_postgres:
        for binary in POSTGRES_BINARIES:
            on_path = shutil.which(binary, path=search_path)
            if on_path is None and not any(postgres_lib.glob(f"*/bin/{binary}")):
                missing.append("postgresql")
                break
    if need_redis and shutil.which("redis-server", path=search_path) is None:
        missing.append("redis-server")
    # A private Redis Cluster is formed with redis-cli (Debian's redis-tools, which redis-server pulls in).
    elif need_redis_cli and shutil.which("redis-cli", path=search_path) is None:
        missing.append("redis-tools")
    return missing


_PACKAGE_CONTENTS = {
    "postgresql": "PostgreSQL (initdb, pg_ctl, postgres, psql)",
    "redis-server": "redis-server",
    "redis-tools": "redis-cli",
}


def require_packages(*, need_postgres: bool, need_redis: bool, need_redis_cli: bool = False) -> None:
    missing = missing_packages(
        need_postgres=need_postgres, need_redis=need_redis, need_redis_cli=need_redis_cli
    )
    if missing:
        what = " and ".join(_PACKAGE_CONTENTS[p] for p in missing)
        raise LocalRunError(
            f"{what} not found. Install with: sudo apt-get install -y {' '.join(missing)}\n"
            "(or set DATABASE_URL / REDIS_URL to servers you already run)"
        )


def _postgres_user_can_enter(directory: Path) -> bool:
    """Whether the `postgres` account can reach `directory` (it needs search permission on every parent)."""
    result = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(directory)],
        capture_output=True,
        check=False,
        cwd="/",
    )
    return result.returncode == 0


def postgres_root(data_dir: Path) -> Path:
    """Where Postgres keeps its files: under the data folder, unless the postgres account cannot
    reach it (we are root and the repository sits in a private home); then a folder in /var/tmp
    named after the data folder's path, so each checkout keeps its own database."""
    if os.geteuid() != 0:
        return data_dir
    if subprocess.run(["id", "postgres"], capture_output=True, check=False).returncode != 0:
        raise LocalRunError(
            "running as root, Postgres needs the `postgres` account, which does not exist. "
            "Install it with: sudo apt-get install -y postgresql"
        )
    if _postgres_user_can_enter(data_dir):
        return data_dir
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    # /var/tmp survives reboots, unlike /tmp, so the local database is kept between runs.
    fallback = Path("/var/tmp") / f"chatpop-{digest}"  # noqa: S108 - ownership is checked below
    fallback.mkdir(mode=0o755, exist_ok=True)
    if fallback.is_symlink() or fallback.stat().st_uid != os.geteuid():
        raise LocalRunError(f"{fallback} exists but is not ours; remove it or set CHATPOP_DATA_DIR")
    fallback.chmod(0o755)
    return fallback


# -- secrets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    signing_key_file: Path
    ip_hash_key: str
    access_code_key: str
    service_token_secret: str = ""
    # HMAC key of the edge's signed media URLs.
    media_url_key: str = ""
    # The private S3's one identity (make run).
    s3_access_key: str = ""
    s3_secret_key: str = ""
    # messaging's master keys file (MASTER_KEYS_FILE).
    master_keys_file: Path | None = None


def service_pythonpath(repo: Path = REPO_ROOT, inherited: str = "") -> str:
    paths = [str(repo / "services" / name) for name in SERVICE_DIRS]
    return os.pathsep.join([*paths, inherited] if inherited else paths)


def _write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically: no reader ever sees it half written or world-readable."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def _identity_key_tool_available() -> bool:
    try:
        return importlib.util.find_spec("chatpop_identity.keys") is not None
    except ModuleNotFoundError:
        return False


def _generate_signing_key(path: Path) -> None:
    if _identity_key_tool_available():
        # identity's own tool, so the key has exactly the form identity expects.
        tmp = path.with_name(f".{path.name}.new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        env = {**os.environ, "PYTHONPATH": service_pythonpath(inherited=os.environ.get("PYTHONPATH", ""))}
        result = subprocess.run(
            [*python_module("chatpop_identity.keys"), "generate", str(tmp)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not tmp.exists():
            raise LocalRunError(
                "`python -m chatpop_identity.keys generate` failed:\n"
                + (result.stderr.strip() or result.stdout)
            )
        tmp.chmod(0o600)
        tmp.replace(path)
        return
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(path, pem)


def ensure_secrets(directory: Path) -> Secrets:
    """The signing key, IP hash key, access-code key, service token secret, media URL key, the
    private S3's access key and secret and messaging's master keys under `directory` (0700), created
    on first use and then kept."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    key_file = directory / SIGNING_KEY_FILE
    if not key_file.exists():
        _generate_signing_key(key_file)
    key_file.chmod(0o600)
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except ValueError as exc:
        raise LocalRunError(
            f"{key_file} is not a readable PEM private key; delete it to get a new one"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise LocalRunError(f"{key_file} is not an Ed25519 key; delete it to get a new one")
    hash_file = directory / IP_HASH_KEY_FILE
    if not hash_file.exists():
        _write_private(hash_file, secrets.token_hex(32).encode())
    hash_file.chmod(0o600)
    ip_hash_key = _read_secret(hash_file)
    code_key_file = directory / ACCESS_CODE_KEY_FILE
    if not code_key_file.exists():
        _write_private(code_key_file, secrets.token_hex(32).encode())
    code_key_file.chmod(0o600)
    generated = {
        SERVICE_TOKEN_SECRET_FILE: lambda: secrets.token_hex(32),
        MEDIA_URL_KEY_FILE: lambda: secrets.token_hex(32),
        S3_ACCESS_KEY_FILE: lambda: "chatpop" + secrets.token_hex(8),
        S3_SECRET_KEY_FILE: lambda: secrets.token_urlsafe(30),
        # Version 1 of messaging's master keys; add versions to this file to rotate (RUNBOOK).
        MASTER_KEYS_FILE: lambda: json.dumps(
            {"current": 1, "keys": {"1": base64.b64encode(secrets.token_bytes(32)).decode()}}
        ),
    }
    values: dict[str, str] = {}
    for name, make in generated.items():
        path = directory / name
        if not path.exists():
            _write_private(path, make().encode())
        path.chmod(0o600)
        values[name] = _read_secret(path)
    return Secrets(
        signing_key_file=key_file,
        ip_hash_key=ip_hash_key,
        access_code_key=_read_secret(code_key_file),
        service_token_secret=values[SERVICE_TOKEN_SECRET_FILE],
        media_url_key=values[MEDIA_URL_KEY_FILE],
        s3_access_key=values[S3_ACCESS_KEY_FILE],
        s3_secret_key=values[S3_SECRET_KEY_FILE],
        master_keys_file=directory / MASTER_KEYS_FILE,
    )


def _read_secret(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise LocalRunError(f"{path} is empty; delete it to get a new one")
    return value


# -- services ---------------------------------------------------------------------------------


def service_specs(
    base_env: Mapping[str, str],
    ports: Ports,
    database_url: str,
    redis_url: str,
    secrets: Secrets,
    *,
    repo: Path = REPO_ROOT,
    s3_env: Mapping[str, str] | None = None,
    redis_cluster: bool | None = None,
) -> list[ServiceSpec]:
    """How to run each service as `python -m chatpop_<name>`, wired to the others by address.

    Each child inherits `base_env` (so OTEL_*, STRIPE_*, SMTP_URL, MAIL_FROM, LOG_LEVEL, S3_* and the
    like pass through); the ports, addresses and datastore URLs set here win over it. identity gets the
    edge's PUBLIC_URL too: the links in its mails point there. `s3_env` (a private S3's S3_*
    settings, SeaweedS3.env()) goes to messaging and the edge, S3_VACUUM_URL to messaging alone.
    `redis_cluster` sets REDIS_CLUSTER for every service (`redis_url` then names the cluster's seed
    nodes); None leaves whatever `base_env` says. Logs are text unless LOG_FORMAT says.
    """
    edge_port = ports.service["edge"]
    public_url = base_env.get("PUBLIC_URL", f"http://localhost:{edge_port}")
    common = {
        **base_env,
        "PYTHONPATH": service_pythonpath(repo, base_env.get("PYTHONPATH", "")),
        "PYTHONUNBUFFERED": "1",
        "LOG_FORMAT": base_env.get("LOG_FORMAT", "text"),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        **{f"{name.upper()}_ADDR": ports.address(name) for name in GRPC_SERVICES},
    }
    if redis_cluster is not None:
        common["REDIS_CLUSTER"] = "true" if redis_cluster else "false"
    specs: list[ServiceSpec] = []
    for name in SERVICES:
        env = {**common, "METRICS_PORT": str(ports.metrics[name])}
        if name == "edge":
            env["HTTP_HOST"] = base_env.get("HTTP_HOST", "127.0.0.1")
            env["HTTP_PORT"] = str(edge_port)
            env["PUBLIC_URL"] = public_url
            env["IP_HASH_KEY"] = secrets.ip_hash_key
            if secrets.media_url_key:
                env["MEDIA_URL_KEY"] = secrets.media_url_key
            ready: GrpcHealth | HttpReady = HttpReady(f"http://127.0.0.1:{edge_port}/readyz")
        else:
            env["GRPC_PORT"] = str(ports.service[name])
            ready = GrpcHealth(ports.address(name))
        if name == "identity":
            env["IDENTITY_SIGNING_KEY_FILE"] = str(secrets.signing_key_file)
            env["PUBLIC_URL"] = public_url
        if name == "rooms":
            env["ACCESS_CODE_KEY"] = secrets.access_code_key
        if name in SERVICE_TOKEN_HOLDERS:
            env["SERVICE_TOKEN_SECRET"] = secrets.service_token_secret
        if name == "messaging" and secrets.master_keys_file is not None:
            env["MASTER_KEYS_FILE"] = str(secrets.master_keys_file)
        if name in S3_USERS and s3_env:
            env.update(s3_env)
            if name != "messaging":
                env.pop("S3_VACUUM_URL", None)
        specs.append(
            ServiceSpec(name=name, argv=python_module(f"chatpop_{name}"), env=env, ready=ready, cwd=repo)
        )
    return specs


def extra_edge_spec(
    specs: Sequence[ServiceSpec],
    name: str,
    http_port: int,
    metrics_port: int,
    env: Mapping[str, str] | None = None,
) -> ServiceSpec:
    """One more edge process wired like the platform's own, on its own ports (and `env` on top):
    edges are replicas, and what must hold across them (fan-out, presence) is tested on two."""
    edge = next(spec for spec in specs if spec.name == "edge")
    merged = {**edge.env, **(env or {}), "HTTP_PORT": str(http_port), "METRICS_PORT": str(metrics_port)}
    return dataclasses.replace(
        edge, name=name, env=merged, ready=HttpReady(f"http://127.0.0.1:{http_port}/readyz")
    )


def redact(url: str) -> str:
    """The URL without its password, for printing (each of a Redis Cluster's comma-separated seeds)."""
    if "," in url:
        return ",".join(redact(part) for part in url.split(","))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def banner(
    ports: Ports,
    *,
    database_url: str,
    redis_url: str,
    data_note: str,
    stripe: bool,
    edge_host: str,
    smtp_url: str = "",
    media_note: str = "",
    redis_note: str = "",
) -> str:
    edge = f"http://localhost:{ports.service['edge']}"
    grpc_line = "  ".join(f"{name} {ports.address(name)}" for name in GRPC_SERVICES)
    metrics_line = "  ".join(f"{name} :{ports.metrics[name]}" for name in SERVICES)
    lines = [
        "",
        "ChatPop is running",
        f"  web + API   {edge}"
        + ("" if edge_host in ("127.0.0.1", "localhost") else f"  (bound to {edge_host})"),
        f"  OpenAPI     {edge}/api/v1/openapi.json   docs: {edge}/api/v1/docs",
        f"  health      {edge}/healthz   {edge}/readyz",
        f"  gRPC        {grpc_line}   (reflection enabled)",
        f"  metrics     {metrics_line}   (/metrics)",
        f"  Postgres    {redact(database_url)}",
        f"  Redis       {redact(redis_url)}" + (f"  ({redis_note})" if redis_note else ""),
        "  payments    "
        + ("Stripe" if stripe else "TEST MODE (no STRIPE_SECRET_KEY: payments complete without Stripe)"),
        "  mail        "
        + (
            redact(smtp_url)
            if smtp_url
            else "NOT SENT (no SMTP_URL: password reset links are printed in identity's log)"
        ),
    ]
    if media_note:
        lines.append(f"  media       {media_note}")
    if data_note:
        lines.append(f"  data        {data_note}")
    lines += ["Press Ctrl-C to stop everything.", ""]
    return "\n".join(lines)


# -- the run ----------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _already_stopping(signum: int, frame: FrameType | None) -> None:
    print("make run: already stopping, please wait", file=sys.stderr)


def _display(path: Path, repo: Path) -> str:
    try:
        return str(path.relative_to(repo))
    except ValueError:
        return str(path)


def run(env: Mapping[str, str], *, repo: Path = REPO_ROOT, out: TextIO = sys.stdout) -> int:
    """Start everything, keep the services up until Ctrl-C/SIGTERM, stop everything; the exit status."""
    data_dir = Path(env.get("CHATPOP_DATA_DIR") or repo / ".data").resolve()
    database_url = env.get("DATABASE_URL", "")
    redis_url = env.get("REDIS_URL", "")
    http_host = env.get("HTTP_HOST", "127.0.0.1")
    supervisor = Supervisor(stream=out, restart=CRASH_BACKOFF, who="make run")
    pg: Postgres | None = None
    redis: Redis | None = None
    cluster: RedisCluster | None = None
    s3: SeaweedS3 | None = None
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        ports = Ports.from_env(env)
        redis_cluster = redis_cluster_wanted(env)
        own_cluster = redis_cluster and not redis_url
        require_packages(need_postgres=not database_url, need_redis=not redis_url, need_redis_cli=own_cluster)
        skip = {"Postgres"} if database_url else set()
        skip |= {"Redis"} if redis_url or redis_cluster else set()
        own_s3 = private_s3_wanted(env)
        ensure_ports_free(
            [
                item
                for item in ports.labelled()
                if item[0] not in skip
                and (own_s3 or not item[0].startswith("S3"))
                and (own_cluster or not item[0].startswith("Redis Cluster"))
            ]
        )

        if not data_dir.exists():
            data_dir.mkdir(parents=True)
            # Postgres runs as its own account when we are root and must be able to enter this folder.
            data_dir.chmod(0o755)
        secrets = ensure_secrets(data_dir / "secrets")
        data_note = f"{_display(data_dir, repo)}/ (secrets in {_display(data_dir / 'secrets', repo)}/)"

        if not database_url:
            pg_root = postgres_root(data_dir)
            if pg_root != data_dir:
                supervisor.note(
                    f"the postgres account cannot enter {data_dir}; "
                    f"Postgres data lives in {pg_root}/pg instead"
                )
                data_note += f", Postgres data in {pg_root}/pg"
            # The postgres account writes its log here, whatever the umask made of the folder.
            (pg_root / "logs").mkdir(exist_ok=True)
            (pg_root / "logs").chmod(0o755)
            pg = Postgres(datadir=pg_root / "pg", port=ports.postgres, socket_dir=pg_root / "pgsock")
            supervisor.note(
                f"starting Postgres on 127.0.0.1:{ports.postgres} (log: {pg_root}/logs/postgres.log)"
            )
            pg.start(pg_root / "logs" / "postgres.log")
            database_url = pg.url
        redis_note = "Redis Cluster" if redis_cluster else ""
        if own_cluster:
            cluster = RedisCluster(
                datadir=data_dir / "redis-cluster",
                ports=ports.redis_cluster_ports,
                bus_ports=ports.redis_cluster_bus_ports,
            )
            first, last = cluster.ports[0], cluster.ports[-1]
            log_note = _display(data_dir / "logs" / "redis-cluster-<port>.log", repo)
            supervisor.note(
                f"starting a {REDIS_CLUSTER_MASTERS}-master Redis Cluster on 127.0.0.1:{first}-{last}"
                f" (bus {cluster.bus_ports[0]}-{cluster.bus_ports[-1]}; log: {log_note})"
            )
            # A restart finds each node's nodes.conf and forms the same cluster again.
            cluster.start(data_dir / "logs" / "redis-cluster.log", persist=True, own_session=True)
            redis_url = cluster.url
            redis_note = (
                f"private {REDIS_CLUSTER_MASTERS}-master Redis Cluster,"
                f" data in {_display(cluster.datadir, repo)}/"
            )
        elif not redis_url:
            redis = Redis(datadir=data_dir / "redis", port=ports.redis)
            supervisor.note(f"starting Redis on 127.0.0.1:{ports.redis}")
            redis.start(data_dir / "logs" / "redis.log", persist=True, own_session=True)
            redis_url = redis.url
        s3_env: dict[str, str] = {}
        if own_s3:
            s3 = SeaweedS3(
                datadir=data_dir / "s3",
                ports=dict(ports.s3),
                access_key=secrets.s3_access_key,
                secret_key=secrets.s3_secret_key,
            )
            log_note = _display(data_dir / "logs" / "s3.log", repo)
            supervisor.note(f"starting S3 (SeaweedFS) on 127.0.0.1:{s3.port} (log: {log_note})")
            try:
                s3.start(data_dir / "logs" / "s3.log", own_session=True)
            except RuntimeError as exc:
                raise LocalRunError(str(exc)) from exc
            s3_env = s3.env()
            media_note = (
                f"private S3 {s3.url}, bucket {s3.bucket} (SeaweedFS, data in {_display(s3.datadir, repo)}/)"
            )
        elif env.get("S3_BUCKET", "").strip():
            media_note = f"S3 {env.get('S3_ENDPOINT_URL') or 'AWS'}, bucket {env['S3_BUCKET'].strip()}"
        else:
            media_note = "OFF (S3_BUCKET is empty: uploads answer media_disabled)"

        supervisor.note("applying migrations: " + ", ".join(MIGRATED))
        migrate(database_url, list(MIGRATED))

        specs = service_specs(
            env,
            ports,
            database_url,
            redis_url,
            secrets,
            repo=repo,
            s3_env=s3_env,
            redis_cluster=redis_cluster,
        )
        supervisor.note("starting " + ", ".join(SERVICES))
        supervisor.start_all(specs, timeout=STARTUP_TIMEOUT, fail_fast=(INVALID_SETTINGS_EXIT,))
        supervisor.note(
            banner(
                ports,
                database_url=database_url,
                redis_url=redis_url,
                data_note=data_note,
                stripe=bool(env.get("STRIPE_SECRET_KEY", "").strip()),
                edge_host=http_host,
                smtp_url=env.get("SMTP_URL", "").strip(),
                media_note=media_note,
                redis_note=redis_note,
            )
        )
        while True:
            supervisor.tend()
            time.sleep(TEND_INTERVAL)
    except KeyboardInterrupt:
        supervisor.note("\nstopping…")
        return 0
    except StartupError as exc:
        why = ": its settings are invalid" if exc.exit_code == INVALID_SETTINGS_EXIT else ""
        supervisor.note(f"make run: {exc.name} {exc.reason}{why} (its output is above); stopping everything")
        return 1
    except (LocalRunError, FileNotFoundError, TimeoutError) as exc:
        supervisor.note(f"make run: {exc}")
        return 1
    except subprocess.CalledProcessError as exc:
        detail = (
            (exc.stderr or b"").decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else exc.stderr
        )
        supervisor.note(f"make run: {' '.join(map(str, exc.cmd))} failed:\n{detail or ''}".rstrip())
        return 1
    finally:
        signal.signal(signal.SIGTERM, _already_stopping)
        signal.signal(signal.SIGINT, _already_stopping)
        supervisor.stop_all()
        if s3 is not None:
            s3.stop()
        if redis is not None:
            redis.stop()
        if cluster is not None:
            cluster.stop()
        if pg is not None:
            pg.stop("fast")
        if supervisor.names or s3 is not None or redis is not None or cluster is not None or pg is not None:
            supervisor.note("stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> int:
    return run(os.environ)


if __name__ == "__main__":
    raise SystemExit(main())
