"""Apply every service's migrations: `python -m chatpop_common.migrate [service ...]`.

Reads DATABASE_URL. Used by `make run`, the test fixtures and the Helm migrations Job.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from chatpop_common.migrations import upgrade

# service name → (package holding migrations/, schema)
SERVICES: dict[str, tuple[str, str]] = {
    "identity": ("chatpop_identity", "identity"),
    "rooms": ("chatpop_rooms", "rooms"),
    "messaging": ("chatpop_messaging", "messaging"),
    "payments": ("chatpop_payments", "payments"),
}


def script_location(package: str) -> Path:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    return Path(module.__file__).resolve().parent / "migrations"


def migrate(database_url: str, services: list[str]) -> None:
    for service in services:
        package, schema = SERVICES[service]
        upgrade(script_location(package), database_url, schema)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("services", nargs="*", help=f"any of {', '.join(SERVICES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.services if s not in SERVICES]
    if unknown:
        parser.error(f"unknown service(s): {', '.join(unknown)}")
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("DATABASE_URL is not set", file=sys.stderr)
        return 2
    migrate(url, args.services or list(SERVICES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
