"""Free ports: below the ephemeral range, never the same to two living processes, in use never."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chatpop_common import ports


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "claims"
    monkeypatch.setattr(ports, "CLAIMS", folder)
    monkeypatch.setattr(ports, "_mine", set())
    return folder


def claim_in_child(
    folder: Path, count: int, *, block: int = 1, linger: bool = False
) -> subprocess.Popen[str]:
    """Another process claiming `count` blocks, printing them (and, with `linger`, staying alive until
    its stdin closes)."""
    code = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from chatpop_common import ports
        ports.CLAIMS = Path({str(folder)!r})
        print(json.dumps(ports.claim_ports({count}, block={block})), flush=True)
        if {linger!r}:
            sys.stdin.read()
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_ports_are_below_the_ephemeral_range_distinct_and_claimed(claims: Path) -> None:
    low = ports.ephemeral_low()
    first = ports.claim_ports(50)
    second = ports.claim_ports(50)
    assert len(set(first) | set(second)) == 100
    assert all(ports.LOWEST <= port < low for port in first + second)
    assert {path.name for path in claims.iterdir() if path.name != ".lock"} == {
        str(p) for p in first + second
    }
    assert all((claims / str(port)).read_text() == str(os.getpid()) for port in first)


def test_blocks_are_consecutive_free_ports(claims: Path) -> None:
    firsts = ports.claim_ports(4, block=3)
    every = [first + offset for first in firsts for offset in range(3)]
    assert len(set(every)) == 12
    assert all(str(port) in {path.name for path in claims.iterdir()} for port in every)


def test_processes_claiming_at_once_never_get_the_same_port(claims: Path) -> None:
    children = [claim_in_child(claims, 150, linger=True) for _ in range(4)]
    try:
        handed = [json.loads(child.stdout.readline()) for child in children if child.stdout is not None]
        mine = ports.claim_ports(150)
        every = [port for some in handed for port in some] + mine
        assert len(every) == 750
        assert len(set(every)) == 750
    finally:
        for child in children:
            child.communicate("")


def test_a_port_someone_listens_on_is_never_handed_out(claims: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        monkeypatch.setattr(ports.secrets, "randbelow", lambda _n: 0)
        listener.bind(("127.0.0.1", ports.LOWEST + 1))
        listener.listen()
        # The walk starts right there: the busy port is passed over, not handed out.
        assert ports.LOWEST + 1 not in ports.claim_ports(3)
    finally:
        listener.close()


def test_the_claims_of_a_process_that_ended_are_free_again_and_removed_at_its_exit(claims: Path) -> None:
    child = claim_in_child(claims, 5, linger=True)
    assert child.stdout is not None
    held = json.loads(child.stdout.readline())
    assert all((claims / str(port)).read_text() == str(child.pid) for port in held)
    child.communicate("")
    # Its exit removed them.
    assert not any((claims / str(port)).exists() for port in held)

    # A claim left by a process that died without cleaning up (killed) is free for the next one.
    stale = held[0]
    (claims / str(stale)).write_text(str(child.pid))
    assert not ports._held_by_another(stale)
    (claims / str(stale)).write_text(str(os.getppid()))
    assert ports._held_by_another(stale)
