"""Health check run by `helm test`: every gRPC service reports SERVING and the edge is ready.

    python health_check.py --grpc identity=host:7101 ... --http edge=http://host:8080/readyz

Each target is retried until --timeout seconds have passed; the exit status is 0 only when every
target answered healthy. One line per target says what was seen, so a failed `helm test` names the
service to look at (`kubectl logs <release>-health-check`).
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check_grpc(address: str, timeout: float) -> str:
    """'' when the server at `address` reports SERVING, else what was seen instead."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
    return ""


def check_http(url: str, timeout: float) -> str:
    """'' when `url` answers 200, else the status or error."""
    if not url.startswith(("http://", "https://")):
        return f"not an http(s) URL: {url}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            return "" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def _target(value: str) -> tuple[str, str]:
    name, sep, where = value.partition("=")
    if not sep or not name or not where:
        raise argparse.ArgumentTypeError(f"expected NAME=ADDRESS, got {value!r}")
    return name, where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grpc", type=_target, action="append", default=[], help="NAME=HOST:PORT")
    parser.add_argument("--http", type=_target, action="append", default=[], help="NAME=URL")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every target")
    args = parser.parse_args(argv)
    if not args.grpc and not args.http:
        parser.error("name at least one --grpc or --http target")

    checks: list[tuple[str, str, Callable[[str, float], str]]] = [
        (name, where, check_grpc) for name, where in args.grpc
    ]
    checks += [(name, where, check_http) for name, where in args.http]
    deadline = time.monotonic() + args.timeout
    failed = 0
    for name, where, check in checks:
        problem = "not checked"
        while True:
            problem = check(where, 3.0)
            if not problem or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
        if problem:
            failed += 1
            print(f"FAIL {name} ({where}): {problem}", flush=True)
        else:
            print(f"ok   {name} ({where})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
