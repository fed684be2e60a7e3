"""Regenerate the Python code and typing stubs for every proto into services/common/chatpop.

Run through `make proto`. The output is checked in; CI regenerates and fails on any difference.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT / "services" / "common"
PACKAGE = OUT / "chatpop"


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "chatpop").rglob("*.proto"))
    if PACKAGE.exists():
        shutil.rmtree(PACKAGE)
    PACKAGE.mkdir(parents=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--plugin=protoc-gen-mypy_grpc={plugin}",
        f"--mypy_grpc_out={OUT}",
        *protos,
    ]
    if protoc.main(args) != 0:
        return 1
    for directory in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").write_text('"""Generated from protos/ by `make proto`; do not edit."""\n')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
