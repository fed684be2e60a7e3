"""`WebhookReceiver`: a small HTTP server on a free port that records every webhook it gets, and
answers with the statuses a test queues (200 once the queue is empty)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Received:
    body: str
    signature: str
    headers: dict[str, str]
    status: int
    at: float

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class WebhookReceiver:
    def __init__(self, path: str = "/webhook") -> None:
        self.path = path
        self.received: list[Received] = []
        self._answers: deque[int] = deque()
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                with receiver._changed:
                    status = receiver._answers.popleft() if receiver._answers else 200
                    receiver.received.append(
                        Received(
                            body=body,
                            signature=self.headers.get("Stripe-Signature", ""),
                            headers=dict(self.headers.items()),
                            status=status,
                            at=time.time(),
                        )
                    )
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="webhook-receiver",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def answer(self, *statuses: int) -> None:
        """Answer the next deliveries with these statuses, in order."""
        with self._changed:
            self._answers.extend(statuses)

    def events(self) -> list[dict[str, Any]]:
        with self._changed:
            return [item.event for item in self.received]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first `count` deliveries, once they have come."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.received)} of {count} webhooks came in {timeout} s")
                self._changed.wait(left)
            return list(self.received[:count])

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
