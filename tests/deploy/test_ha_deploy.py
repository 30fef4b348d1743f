"""The highly available deployments (issue 15): the Kubernetes Deployment of two replicas
on two nodes (deploy/kubernetes/ha.yaml) and the two-host systemd example (deploy/systemd/):
they parse, spread, probe, stop and lock down as the HA daemon needs, what they set loads
as a valid configuration with HA on and the DSN read from its file, and the HA daemon
(psycopg and its libpq included) runs under the unit's MemoryDenyWriteExecute=yes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from supervisor import __version__
from supervisor.config.load import load_settings
from supervisor.config.model import HaSettings, Settings
from supervisor.config.problems import ConfigError
from supervisor.simulator import SimulatorServer, parse_scenario
from tests.deploy import mdwe
from tests.deploy.conftest import (
    ROOT,
    SIDECAR,
    SYSTEMD,
    directives,
    missing,
    needs_settings,
    tool,
)
from tests.waiting import wait_for

Doc = dict[str, Any]

HA = ROOT / "deploy" / "kubernetes" / "ha.yaml"
NAME = "wasend-supervisor"
EXAMPLE = ROOT / "deploy" / "systemd"
DROP_IN = EXAMPLE / "wasend-supervisor.service.d" / "ha.conf"
HOSTS = (EXAMPLE / "host-a.toml", EXAMPLE / "host-b.toml")
DAEMON = SYSTEMD / "wasend-supervisor.service"
INSTALLED = "/opt/wasend-supervisor/bin/wasend-supervisor"
CREDENTIALS = PurePosixPath("/run/credentials") / DAEMON.name
HOW = "Debian: apt-get install systemd"
POD_NAME = "wasend-supervisor-6d5f8b7c9-x2k4q"  # what the downward API gives


# ----------------------------------------------------------------- Kubernetes


def load_docs(path: Path) -> list[Doc]:
    loaded = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert all(isinstance(doc, dict) for doc in loaded)
    return loaded


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return load_docs(HA)


def kind(docs: list[Doc], name: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == name]
    assert len(found) == 1, f"{len(found)} {name} objects"
    return found[0]


@pytest.fixture(scope="module")
def deployment(docs: list[Doc]) -> Doc:
    found = kind(docs, "Deployment")
    assert found["apiVersion"] == "apps/v1"
    return found


@pytest.fixture(scope="module")
def labels(deployment: Doc) -> dict[str, str]:
    """The selector's labels, which the pods carry."""
    selector: dict[str, str] = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    return selector


@pytest.fixture(scope="module")
def pod(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: Doc) -> Doc:
    (found,) = pod["containers"]
    assert found["name"] == NAME
    return dict(found)


def env(container: Doc) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_manifest_holds_a_secret_a_deployment_and_a_disruption_budget(docs: list[Doc]) -> None:
    assert sorted(doc["kind"] for doc in docs) == ["Deployment", "PodDisruptionBudget",
                                                   "Secret"]
    secret = kind(docs, "Secret")
    assert secret["apiVersion"] == "v1"
    assert set(secret["stringData"]) == {"api-key", "state-url"}
    assert all("REPLACE" in value for value in secret["stringData"].values()), (
        "the example Secret holds placeholders, never a key or a password")


def test_two_replicas_of_the_supervisor_in_its_own_pods(deployment: Doc, pod: Doc,
                                                       container: Doc) -> None:
    assert deployment["spec"]["replicas"] == 2
    assert "initContainers" not in pod, "its own pod, not a sidecar"
    assert container.get("args", ["run"]) == ["run"]
    assert pod["automountServiceAccountToken"] is False


def test_replicas_are_spread_across_nodes(pod: Doc, labels: dict[str, str]) -> None:
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"
    assert spread["maxSkew"] == 1
    assert spread.get("minDomains", 2) == 2, "two nodes, or the second replica waits"
    assert spread["labelSelector"]["matchLabels"] == labels
    (anti,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    term = anti["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == labels
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"][
        "podAntiAffinity"], "preferred: a rolling update's surge pod may still be placed"


def test_rolling_update_starts_one_new_replica_before_stopping_one(deployment: Doc) -> None:
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_disruption_budget_lets_one_replica_go_at_a_time(docs: list[Doc],
                                                        labels: dict[str, str]) -> None:
    budget = kind(docs, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in budget["spec"]
    assert budget["spec"]["selector"]["matchLabels"] == labels


def test_key_and_dsn_come_from_the_secret_as_files(docs: list[Doc], pod: Doc,
                                                  container: Doc) -> None:
    secret = kind(docs, "Secret")
    variables = env(container)
    files = {PurePosixPath(variables["WASEND_SUPERVISOR_API_KEY_FILE"]): "api-key",
             PurePosixPath(variables["WASEND_SUPERVISOR_STATE_URL_FILE"]): "state-url"}
    (folder,) = {path.parent for path in files}
    (mount,) = [m for m in container["volumeMounts"]
                if PurePosixPath(m["mountPath"]) == folder]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    source = volume["secret"]
    assert source["secretName"] == secret["metadata"]["name"]
    assert {item["path"]: item["key"] for item in source["items"]} == {
        path.name: key for path, key in files.items()}
    assert source["defaultMode"] & 0o007 == 0, "not readable by others"
    assert pod["securityContext"]["fsGroup"] == container["securityContext"]["runAsGroup"]
    for direct in ("WASEND_API_KEY", "WASEND_SUPERVISOR_STATE_URL"):
        assert direct not in variables, "one source for each secret, its file"


def test_replica_name_is_the_pod_name_from_the_downward_api(container: Doc) -> None:
    assert env(container)["WASEND_SUPERVISOR_HA__REPLICA"] == {
        "fieldRef": {"fieldPath": "metadata.name"}}
    assert env(container)["WASEND_SUPERVISOR_HA__ENABLED"] == "true"


def test_pod_names_are_valid_replica_names(deployment: Doc) -> None:
    """A Deployment's pod is named <deployment>-<template hash, up to 10>-<5 characters>;
    ha.replica takes 1 to 63 letters, digits, '.', '_' or '-'."""
    longest = f"{deployment['metadata']['name']}-{'7' * 10}-x2k4q"
    assert len(longest) <= 63
    assert HaSettings(replica=longest).replica == longest


def test_probes_ask_livez_and_readyz_on_the_listener(container: Doc) -> None:
    listen = env(container)["WASEND_SUPERVISOR_HTTP_LISTEN"]
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0", "the kubelet probes the pod's address, not loopback"
    (named,) = container["ports"]
    assert named["containerPort"] == int(port)

    def probe(name: str) -> tuple[str, Any]:
        get = container[name]["httpGet"]
        return get["path"], get["port"]

    assert probe("livenessProbe") == ("/livez", named["name"])
    assert probe("readinessProbe") == ("/readyz", named["name"])
    assert probe("startupProbe") == ("/livez", named["name"])


def stop_time() -> float:
    """What a leader's clean stop may take: shutdown_grace for the poll in flight, then the
    resignation, given ha.renew at most (the defaults: the examples change neither)."""
    return float(Settings.model_fields["shutdown_grace"].default
                 + HaSettings.model_fields["renew"].default)


def test_termination_grace_leaves_time_to_finish_and_resign(pod: Doc, container: Doc) -> None:
    variables = env(container)
    assert float(variables["WASEND_SUPERVISOR_SHUTDOWN_GRACE"]) == (
        Settings.model_fields["shutdown_grace"].default)
    assert "WASEND_SUPERVISOR_HA__RENEW" not in variables
    assert pod["terminationGracePeriodSeconds"] > stop_time() + 5


def test_security_context_is_the_sidecars(pod: Doc, container: Doc) -> None:
    sidecar_pod = kind(load_docs(SIDECAR), "Deployment")["spec"]["template"]["spec"]
    (sidecar,) = [c for c in sidecar_pod["initContainers"] if c["name"] == NAME]
    assert container["securityContext"] == sidecar["securityContext"]
    assert pod["securityContext"] == sidecar_pod["securityContext"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == sidecar["image"]


def test_only_tmp_is_writable_and_no_state_volume(container: Doc) -> None:
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp"}
    assert "WASEND_SUPERVISOR_STATE_PATH" not in env(container)


def test_resources_have_requests_and_limits(container: Doc) -> None:
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_manifest_environment_loads_with_ha_on_and_the_dsn_from_its_file(
        docs: list[Doc], container: Doc, tmp_path: Path) -> None:
    needs_settings("ha.enabled", "ha.replica")
    secret = kind(docs, "Secret")["stringData"]
    values = {name: value for name, value in env(container).items() if isinstance(value, str)}
    values["WASEND_SUPERVISOR_HA__REPLICA"] = POD_NAME
    key = tmp_path / "wasend_api_key"
    key.write_text("sk-ha-test-key\n")
    dsn = tmp_path / "state_url"
    dsn.write_text(secret["state-url"] + "\n")
    values["WASEND_SUPERVISOR_API_KEY_FILE"] = str(key)
    values["WASEND_SUPERVISOR_STATE_URL_FILE"] = str(dsn)
    try:
        settings = load_settings(env=values, secrets_dirs=[])
    except ConfigError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail("\n".join(exc.problems))
    state = settings.state_dsn()
    assert state is not None and state.get_secret_value() == secret["state-url"]
    assert settings.ha.enabled is True
    assert settings.ha.replica == POD_NAME
    assert settings.http_listen == "0.0.0.0:9187"


def test_manifest_environment_without_its_dsn_is_refused(container: Doc,
                                                        tmp_path: Path) -> None:
    """HA said on, and no DSN: a configuration error (exit 78), not a lone replica acting
    on a state of its own."""
    needs_settings("ha.enabled", "ha.replica")
    values = {name: value for name, value in env(container).items() if isinstance(value, str)}
    del values["WASEND_SUPERVISOR_STATE_URL_FILE"]
    key = tmp_path / "wasend_api_key"
    key.write_text("sk-ha-test-key\n")
    values["WASEND_SUPERVISOR_API_KEY_FILE"] = str(key)
    values["WASEND_SUPERVISOR_STATE_PATH"] = str(tmp_path / "state.db")
    with pytest.raises(ConfigError) as caught:
        load_settings(env=values, secrets_dirs=[])
    assert any("ha.enabled" in line for line in caught.value.problems), caught.value.problems


# ----------------------------------------------------------------- systemd


def verify(drop_in: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on a copy of the daemon's unit with ``drop_in`` in its
    ``.d`` folder beside it (verify looks for units, and their drop-ins, in the folders of
    the files it is given), the installed console script replaced by a stub (see
    test_systemd.verify)."""
    analyze = tool("systemd-analyze", HOW)
    stub = tmp_path / "bin" / "wasend-supervisor"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit = tmp_path / DAEMON.name
    unit.write_text(DAEMON.read_text().replace(INSTALLED, str(stub)))
    folder = tmp_path / DROP_IN.parent.name
    folder.mkdir()
    (folder / DROP_IN.name).write_text(drop_in)
    return subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)


def test_unit_with_the_drop_in_verifies_with_nothing_on_stderr(tmp_path: Path) -> None:
    done = verify(DROP_IN.read_text(), tmp_path)
    assert done.stderr == "", done.stderr
    assert done.returncode == 0


def test_verify_as_run_here_reads_the_drop_in(tmp_path: Path) -> None:
    typo = DROP_IN.read_text().replace("LoadCredential=", "LoadCredentail=")
    done = verify(typo, tmp_path)
    assert "Unknown key 'LoadCredentail'" in done.stderr
    assert DROP_IN.name in done.stderr


def test_drop_in_adds_the_dsn_credential_and_leaves_the_rest_to_the_unit() -> None:
    assert DROP_IN.parent.name == DAEMON.name + ".d"
    assert directives(DROP_IN) == [
        ("Service", "LoadCredential", "state_url:/etc/wasend-supervisor/state_url")]
    assert ("Service", "LoadCredential", "wasend_api_key:/etc/wasend-supervisor/api_key") in (
        directives(DAEMON)), "the key stays the unit's own credential"


def test_unit_stop_timeout_leaves_time_to_finish_and_resign(hosts: list[dict[str, Any]]) -> None:
    (timeout,) = [value for _, key, value in directives(DAEMON) if key == "TimeoutStopSec"]
    assert timeout.endswith("s")
    assert float(timeout[:-1]) > stop_time() + 5
    for config in hosts:
        assert "shutdown_grace" not in config and "renew" not in config["ha"]


@pytest.fixture(scope="module")
def hosts() -> list[dict[str, Any]]:
    return [tomllib.loads(path.read_text()) for path in HOSTS]


def test_host_configs_differ_in_the_replica_name_only(hosts: list[dict[str, Any]]) -> None:
    first, second = ({**config, "ha": dict(config["ha"])} for config in hosts)
    assert first["ha"].pop("replica") != second["ha"].pop("replica")
    assert first == second
    assert first["http_listen"] == ""
    assert first["ha"]["enabled"] is True


def test_host_configs_read_the_dsn_from_the_credential(hosts: list[dict[str, Any]]) -> None:
    name, _, path = directives(DROP_IN)[0][2].partition(":")
    assert path.startswith("/etc/wasend-supervisor/")
    for config in hosts:
        assert PurePosixPath(config["state_url_file"]) == CREDENTIALS / name
        assert "state_url" not in config and "state_path" not in config


@pytest.mark.parametrize("path", HOSTS, ids=lambda path: path.name)
def test_host_config_loads_with_ha_on_and_the_dsn_from_its_file(path: Path,
                                                               tmp_path: Path) -> None:
    needs_settings("ha.enabled", "ha.replica")
    url = "postgresql://wasend_supervisor:s3cret-pw@db.example.net:5432/wasend?sslmode=require"
    credential = tmp_path / "credentials" / "state_url"
    credential.parent.mkdir()
    credential.write_text(url + "\n")
    copy = tmp_path / "config.toml"
    text = path.read_text()
    assert str(CREDENTIALS / "state_url") in text
    copy.write_text(text.replace(str(CREDENTIALS / "state_url"), str(credential)))
    try:
        settings = load_settings(config_path=copy, env={}, require_api_key=False,
                                 secrets_dirs=[])
    except ConfigError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail("\n".join(exc.problems))
    state = settings.state_dsn()
    assert state is not None and state.get_secret_value() == url
    assert settings.ha.enabled is True
    assert settings.ha.replica == tomllib.loads(text)["ha"]["replica"]


API_KEY = "sk-ha-mdwe-test-key-41b9"


@pytest.mark.e2e
def test_ha_daemon_runs_under_memory_deny_write_execute(pg_url: str) -> None:
    """``run`` with HA on, as a host of the systemd example runs it (its replica's name),
    under the seccomp filter of MemoryDenyWriteExecute=yes (tests/deploy/mdwe.py): it takes
    the lease, restarts a stopped session over real HTTP, and resigns at SIGTERM."""
    if mdwe.library() is None:
        missing("libseccomp", "Debian: apt-get install libseccomp2, a dependency of systemd")
    scenario = parse_scenario({"seed": 1, "session_count": 0,
                               "sessions": [{"id": "a"}, {"id": "b", "status": "STOPPED"}]},
                              "test")
    server = SimulatorServer(scenario=scenario, api_key=API_KEY).start()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
           "WASEND_BASE_URL": server.base_url, "WASEND_API_KEY": API_KEY,
           "WASEND_SUPERVISOR_LOG_FORMAT": "json", "WASEND_SUPERVISOR_STATE_URL": pg_url,
           "WASEND_SUPERVISOR_HA__REPLICA": "host-a", "WASEND_SUPERVISOR_POLL_INTERVAL": "0.5",
           "WASEND_SUPERVISOR_SHUTDOWN_GRACE": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.deploy.mdwe", sys.executable, "-m", "supervisor", "run"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: proc.poll() is not None or server.simulator.status("b") == "WORKING",
                 timeout=30, describe="session b restarted")
        assert proc.poll() is None, "the daemon exited under the filter"
        agents = {record.agent for record in server.simulator.requests()}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            server.stop()
    assert proc.returncode == 0, err[-2000:]
    events = [json.loads(line)["event"] for line in (out + err).splitlines()
              if line.startswith("{") and "event" in line]
    ha = [event for event in events if event.startswith("ha.")]
    assert ha[0] == "ha.elected" and ha[-1] == "ha.resigned", ha
    assert agents == {f"wasend-supervisor/{__version__} (replica host-a)"}
