"""Free TCP ports for private servers (test fixtures, benchmarks, `make run` beside them), never handed
to two processes at once.

A port found free by binding it and letting go can be taken before its server binds it: by an
outgoing connection (the kernel picks those from its ephemeral range) or by another process that
asked the kernel the same way a moment later (parallel test workers each start a whole platform).
So ports come from below the ephemeral range, where the kernel never picks, and each one handed out
is claimed: a file named after it in a folder all processes of this machine share, holding the pid
of the process it was handed to. A port is free when nothing listens on it and no living process
holds its claim; a process's claims last until it exits (a fixture may stop a server and start it
again on the same port), and are removed then. The claims are made under a lock, so two processes
never claim one port.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Ports below this are left alone (well-known and registered services' usual ports).
LOWEST = 10000
CLAIMS = Path(tempfile.gettempdir()) / "chatpop-port-claims"
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")

_mine: set[int] = set()


class NoFreePorts(RuntimeError):
    pass


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def claim_ports(count: int, *, block: int = 1) -> list[int]:
    """The first ports of `count` blocks of `block` consecutive free ports (each port of a block claimed
    for this process), below the ephemeral range."""
    high = ephemeral_low()
    span = high - LOWEST - block
    if span <= 0:
        raise NoFreePorts(f"no ports between {LOWEST} and the ephemeral range (from {high})")
    firsts: list[int] = []
    with _claims_locked():
        candidate = LOWEST + secrets.randbelow(span)
        for _ in range(span):
            candidate = candidate + 1 if candidate + 1 < high - block else LOWEST
            block_ports = range(candidate, candidate + block)
            if all(_free(port) for port in block_ports):
                for port in block_ports:
                    _claim(port)
                firsts.append(candidate)
                if len(firsts) == count:
                    return firsts
                candidate += block - 1
    raise NoFreePorts(f"only {len(firsts)} of {count} free blocks of {block} ports below {high}")


@contextlib.contextmanager
def _claims_locked() -> Iterator[None]:
    if not CLAIMS.is_dir():
        CLAIMS.mkdir(parents=True, exist_ok=True)
        # Shared by every user's processes (as /tmp is), whatever the umask.
        with contextlib.suppress(OSError):
            CLAIMS.chmod(0o1777)
    lock_path = CLAIMS / ".lock"
    if not lock_path.exists():
        lock_path.touch()
        with contextlib.suppress(OSError):
            lock_path.chmod(0o666)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _free(port: int) -> bool:
    if port in _mine or _held_by_another(port):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _held_by_another(port: int) -> bool:
    try:
        pid = int((CLAIMS / str(port)).read_text() or 0)
    except FileNotFoundError:
        return False
    except ValueError:
        return False  # half written by a process that died writing it: nobody holds it
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(port: int) -> None:
    (CLAIMS / str(port)).write_text(str(os.getpid()))
    _mine.add(port)


@atexit.register
def _release() -> None:
    pid = str(os.getpid())
    for port in _mine:
        path = CLAIMS / str(port)
        with contextlib.suppress(OSError):
            if path.read_text() == pid:
                path.unlink()
