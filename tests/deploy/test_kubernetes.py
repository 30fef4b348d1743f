"""The example Kubernetes manifest: it parses, and the supervisor runs in it as a native
sidecar with its key from the Secret, both probes, a locked-down security context, limits
and enough time to stop."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from supervisor.config.load import load_settings
from supervisor.config.model import Settings
from supervisor.config.problems import ConfigError
from tests.deploy.conftest import DOCKERFILE, SIDECAR, needs_settings

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    loaded = [doc for doc in yaml.safe_load_all(SIDECAR.read_text()) if doc is not None]
    assert all(isinstance(doc, dict) for doc in loaded)
    return loaded


def kind(docs: list[Doc], name: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == name]
    assert len(found) == 1, f"{len(found)} {name} objects"
    return found[0]


@pytest.fixture(scope="module")
def pod(docs: list[Doc]) -> Doc:
    deployment = kind(docs, "Deployment")
    assert deployment["apiVersion"] == "apps/v1"
    template = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= (
        template["metadata"]["labels"].items())
    spec: Doc = template["spec"]
    return spec


@pytest.fixture(scope="module")
def sidecar(pod: Doc) -> Doc:
    found: list[Doc] = [c for c in pod["initContainers"] if c["name"] == "wasend-supervisor"]
    assert len(found) == 1
    return found[0]


def env(container: Doc) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_manifest_holds_a_secret_and_a_deployment(docs: list[Doc]) -> None:
    assert sorted(doc["kind"] for doc in docs) == ["Deployment", "Secret"]
    secret = kind(docs, "Secret")
    assert secret["apiVersion"] == "v1"
    (value,) = secret["stringData"].values()
    assert "REPLACE" in value, "the example Secret holds a placeholder, never a key"


def test_supervisor_is_a_native_sidecar_beside_the_application(pod: Doc,
                                                              sidecar: Doc) -> None:
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar.get("args", ["run"]) == ["run"]
    assert pod["containers"], "the application container"
    assert all("restartPolicy" not in c for c in pod["containers"])
    assert all(c["name"] != "wasend-supervisor" for c in pod["containers"])


def test_key_comes_from_the_secret_as_a_file(docs: list[Doc], pod: Doc,
                                            sidecar: Doc) -> None:
    secret = kind(docs, "Secret")
    key_file = PurePosixPath(env(sidecar)["WASEND_SUPERVISOR_API_KEY_FILE"])
    (mount,) = [m for m in sidecar["volumeMounts"]
                if PurePosixPath(m["mountPath"]) == key_file.parent]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    source = volume["secret"]
    assert source["secretName"] == secret["metadata"]["name"]
    (item,) = source["items"]
    assert item["path"] == key_file.name
    assert item["key"] in secret["stringData"]
    assert source["defaultMode"] & 0o007 == 0, "not readable by others"
    assert pod["securityContext"]["fsGroup"] == sidecar["securityContext"]["runAsGroup"]
    assert "WASEND_API_KEY" not in env(sidecar), "one key source, the file"


def test_probes_ask_livez_and_readyz_on_the_listener(sidecar: Doc) -> None:
    listen = env(sidecar)["WASEND_SUPERVISOR_HTTP_LISTEN"]
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0", "the kubelet probes the pod's address, not loopback"
    (named,) = sidecar["ports"]
    assert named["containerPort"] == int(port)

    def probe(name: str) -> tuple[str, Any]:
        get = sidecar[name]["httpGet"]
        return get["path"], get["port"]

    assert probe("livenessProbe") == ("/livez", named["name"])
    assert probe("readinessProbe") == ("/readyz", named["name"])
    assert probe("startupProbe") == ("/livez", named["name"])


def test_security_context_is_locked_down(pod: Doc, sidecar: Doc) -> None:
    context = sidecar["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    user = DOCKERFILE.read_text().split("\nUSER ", 1)[1].split()[0]
    assert f"{context['runAsUser']}:{context['runAsGroup']}" == user


def test_writable_paths_are_volumes_under_a_read_only_root(sidecar: Doc) -> None:
    mounted = {PurePosixPath(m["mountPath"]) for m in sidecar["volumeMounts"]
               if not m.get("readOnly")}
    state = PurePosixPath(env(sidecar)["WASEND_SUPERVISOR_STATE_PATH"])
    assert state.parent in mounted
    assert PurePosixPath("/tmp") in mounted


def test_resources_have_requests_and_limits(sidecar: Doc) -> None:
    resources = sidecar["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_termination_grace_exceeds_the_shutdown_grace(pod: Doc, sidecar: Doc) -> None:
    grace = float(env(sidecar).get("WASEND_SUPERVISOR_SHUTDOWN_GRACE",
                                   Settings.model_fields["shutdown_grace"].default))
    assert pod["terminationGracePeriodSeconds"] > grace + 5


def test_sidecar_environment_is_a_valid_configuration(sidecar: Doc, tmp_path: Any) -> None:
    needs_settings("http_listen", "state_path")
    values = {name: value for name, value in env(sidecar).items() if isinstance(value, str)}
    key = tmp_path / "wasend_api_key"
    key.write_text("sk-sidecar-test-key\n")
    values["WASEND_SUPERVISOR_API_KEY_FILE"] = str(key)
    values["WASEND_SUPERVISOR_STATE_PATH"] = str(tmp_path / "state.db")
    try:
        load_settings(env=values, secrets_dirs=[])
    except ConfigError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail("\n".join(exc.problems))
