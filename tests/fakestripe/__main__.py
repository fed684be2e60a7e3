"""`python -m tests.fakestripe [--port N] [--secret-key sk_test_…] …`: the fake as a process of its own.

It makes one platform (with the given keys, or generated ones), prints it as one JSON line on stdout
(url, account_id, secret_key, publishable_key, webhook_secret), and serves until SIGTERM or Ctrl-C.
Readiness: GET /_fake/health answers 200.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading

from tests.fakestripe.server import DEFAULT_RETRY_DELAYS, FakeStripeServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakestripe", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret-key")
    parser.add_argument("--publishable-key")
    parser.add_argument("--webhook-secret")
    parser.add_argument(
        "--retry-delays",
        default=",".join(str(delay) for delay in DEFAULT_RETRY_DELAYS),
        help="seconds before each webhook retry, comma-separated",
    )
    args = parser.parse_args()
    delays = [float(part) for part in args.retry_delays.split(",") if part]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeStripeServer(host=args.host, port=args.port, retry_delays=delays) as server:
        platform = server.new_platform(
            secret_key=args.secret_key,
            publishable_key=args.publishable_key,
            webhook_secret=args.webhook_secret,
        )
        shown = {
            "url": platform.url,
            "account_id": platform.account_id,
            "secret_key": platform.secret_key,
            "publishable_key": platform.publishable_key,
            "webhook_secret": platform.webhook_secret,
        }
        print(json.dumps(shown), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        platform.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
