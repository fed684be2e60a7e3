"""What encryption at rest costs per message (a benchmark, not a test).

Two measurements, printed as JSON:

- `micro`: in-process microseconds of each operation the message path adds (messaging's own code:
  keys.Sealer / keys.Opener): sealing the text for Postgres, sealing the whole entry for Redis (hot
  cache and pub/sub, one value for both), opening that entry (once in every messaging process whose
  hub serves the room, the sender's included) and opening a text (history read from Postgres). The
  send path costs two seals and one open per process.
- `platform` (unless `--micro-only`): the CPU each process uses per accepted message under
  bench/ws_load.py's throughput scenario (its CPU meter), with encryption (this tree) and, with
  `--baseline REF`, without it: the same scenario run from a temporary git worktree of REF (a commit
  from before encryption existed), side by side, with their ratio.

    .venv/bin/python bench/encryption.py --micro-only
    .venv/bin/python bench/encryption.py --baseline 66c305f --duration 15
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import emit, machine

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("common", "identity", "rooms", "messaging", "payments", "edge")


def _pythonpath(repo: Path) -> str:
    return os.pathsep.join(str(repo / "services" / name) for name in SERVICES)


def _best_us(operation: Callable[[], object], count: int, repeats: int = 5) -> float:
    """Microseconds per call, best of `repeats` runs of `count` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            operation()
        best = min(best, (time.perf_counter() - start) / count)
    return round(best * 1e6, 3)


def micro(count: int, text_chars: int) -> dict[str, Any]:
    sys.path[:0] = _pythonpath(REPO).split(os.pathsep)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from chatpop.messaging.v1 import messaging_pb2
    from chatpop_messaging import crypto
    from chatpop_messaging.keys import Opener, Sealer

    room_id = str(uuid.uuid4())
    cipher = AESGCM(os.urandom(32))
    sealer, opener = Sealer(room_id, 1, cipher), Opener(room_id, {1: cipher})
    text = ("A message of ordinary length, " * 20)[:text_chars]
    message = messaging_pb2.Message(
        id=str(uuid.uuid4()),
        room_id=room_id,
        seq=123456,
        sender_participant_id=str(uuid.uuid4()),
        sender_username="Someone_42",
        client_msg_id=uuid.uuid4().hex,
        text=text,
        kind=messaging_pb2.ENTRY_KIND_MESSAGE,
    )
    message.created_at.GetCurrentTime()
    sealed_text = sealer.text(message.id, crypto.TEXT, text)
    sealed_entry = sealer.entry(message)
    results = {
        "seal_text_us": _best_us(lambda: sealer.text(message.id, crypto.TEXT, text), count),
        "seal_entry_us": _best_us(lambda: sealer.entry(message), count),
        "open_entry_us": _best_us(lambda: opener.entry(sealed_entry), count),
        "open_text_us": _best_us(lambda: opener.text(message.id, crypto.TEXT, sealed_text), count),
        # For scale: what the path did anyway with the entry (encode for Redis, decode from pub/sub).
        "encode_entry_us": _best_us(message.SerializeToString, count),
        "decode_entry_us": _best_us(
            lambda: messaging_pb2.Message.FromString(message.SerializeToString()), count
        ),
    }
    send_path = results["seal_text_us"] + results["seal_entry_us"] + results["open_entry_us"]
    return {
        "text_chars": text_chars,
        "calls": count,
        **results,
        "stored_overhead_bytes": {
            "text": len(sealed_text) - len(text.encode()),
            "entry": len(sealed_entry) - len(message.SerializeToString()),
        },
        # Two seals, and one open in the one messaging process serving the room.
        "send_path_us_per_message": round(send_path, 3),
    }


def _ws_load(repo: Path, duration: float, output: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": _pythonpath(repo)}
    command = [
        sys.executable,
        str(repo / "bench" / "ws_load.py"),
        "--scenario",
        "throughput",
        "--duration",
        str(duration),
        "--output",
        str(output),
    ]
    subprocess.run(command, env=env, cwd=repo, check=True, stdout=subprocess.DEVNULL)
    document = json.loads(output.read_text())
    results = document["results"]
    result: dict[str, Any] = results[0] if isinstance(results, list) else results["throughput"]
    return result


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    per = result.get("cpu_ms_per_message", {})
    return {
        "messages_accepted_per_s": result.get("messages_accepted_per_s"),
        "cpu_ms_per_message_all_services": result.get("cpu_ms_per_message_all_services"),
        "cpu_ms_per_message_messaging": per.get("messaging"),
        "cpu_ms_per_message": per,
    }


def platform(duration: float, baseline: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="chatpop-bench-enc-") as tmp:
        encrypted = _summary(_ws_load(REPO, duration, Path(tmp) / "encrypted.json"))
        report: dict[str, Any] = {"scenario": "throughput", "duration_s": duration, "encrypted": encrypted}
        if baseline is None:
            return report
        worktree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(worktree), baseline],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            plain = _summary(_ws_load(worktree, duration, Path(tmp) / "plain.json"))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, check=False)
        report["baseline"] = {"commit": baseline, **plain}
        for key in ("cpu_ms_per_message_all_services", "cpu_ms_per_message_messaging"):
            if encrypted.get(key) and plain.get(key):
                report[f"ratio_{key.removeprefix('cpu_ms_per_message_') or 'all'}"] = round(
                    encrypted[key] / plain[key], 3
                )
        return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20_000, help="calls per microbenchmark run")
    parser.add_argument("--text-chars", type=int, default=120, help="length of the message text")
    parser.add_argument("--micro-only", action="store_true", help="skip the whole-platform measurement")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of the throughput scenario")
    parser.add_argument("--baseline", help="a commit from before encryption, run side by side (git worktree)")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    document: dict[str, Any] = {
        "benchmark": "encryption",
        "machine": machine(),
        "micro": micro(args.calls, args.text_chars),
    }
    if not args.micro_only:
        document["platform"] = platform(args.duration, args.baseline)
    emit(document, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
