"""Private PostgreSQL and Redis servers for local runs and tests.

`make run` keeps them under a data folder between runs; test fixtures start throwaway ones on free
ports. PostgreSQL refuses to run as root, so when we are root its files belong to the `postgres`
user and its commands run through `runuser`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_USER = "chatpop"
PG_DB = "chatpop"


_handed_out: set[int] = set()


def free_ports(count: int) -> list[int]:
    """`count` free ports, distinct from each other and from every port this process handed out before.

    The kernel may give a just-released port again on the next bind, so each choice is held bound
    until all are made, and remembered for later calls.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in _handed_out:
                ports.append(port)
                _handed_out.add(port)
        return ports


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
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


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
