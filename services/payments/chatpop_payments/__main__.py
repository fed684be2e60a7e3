"""`python -m chatpop_payments`: the payments gRPC server."""

from __future__ import annotations

import sys

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from chatpop_common.server import run
from chatpop_payments.app import build
from chatpop_payments.settings import Settings


def _describe(error: ErrorDetails) -> str:
    """One problem, named by its environment variable."""
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return message
    return f"{'.'.join(map(str, error['loc'])).upper()}: {message}"


def main() -> int:
    try:
        # Every field comes from the environment, which mypy cannot see.
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        print(f"payments: invalid configuration: {problems}", file=sys.stderr)
        return 2
    run("payments", settings, lambda: build(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
