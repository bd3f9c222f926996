"""The Kubernetes manifests, checked offline: kubernetes-validate --strict for 1.29 (the first
release with native sidecars on by default), then the pod's wiring."""

from __future__ import annotations

import posixpath
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_artifacts import (
    KUBERNETES_DIR,
    dockerfile_targets,
    drain_seconds,
    effective_settings,
    image_target,
    listeners,
    port_of,
    sidecar_variables,
)

KUBERNETES_VERSION = "1.29.0"
MANIFESTS = sorted(KUBERNETES_DIR.glob("*.yaml"))


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("kubernetes-validate")
    if tool is None:
        pytest.skip("kubernetes-validate is not installed")
    return subprocess.run(
        [tool, "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    documents = yaml.safe_load_all((KUBERNETES_DIR / "deployment.yaml").read_text())
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    return dict(deployment["spec"]["template"]["spec"])


@pytest.fixture(scope="module")
def sidecars(pod: dict[str, Any]) -> dict[str, tuple[dict[str, Any], str]]:
    """Native sidecar name -> (container, sidecar command from its image's target)."""
    targets = dockerfile_targets()
    found = {}
    for container in pod["initContainers"]:
        command = targets[image_target(container["image"])].sidecar_command
        assert command is not None, f"{container['name']} is not a sidecar image"
        found[container["name"]] = (container, command)
    return found


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


@pytest.fixture(scope="module")
def settings(sidecars: dict[str, tuple[dict[str, Any], str]]) -> dict[str, Any]:
    return {
        name: effective_settings(command, env_of(container))
        for name, (container, command) in sidecars.items()
    }


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda path: path.name)
def test_valid_for_kubernetes_1_29_strict(manifest: Path) -> None:
    result = kubernetes_validate(manifest)
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    broken = tmp_path / "deployment.yaml"
    text = (KUBERNETES_DIR / "deployment.yaml").read_text()
    broken.write_text(text.replace("readOnlyRootFilesystem: true", "readOnlyRootFs: true", 1))
    assert kubernetes_validate(broken).returncode != 0


def test_sidecars_are_native_and_every_init_container_is_one(
    pod: dict[str, Any], sidecars: dict[str, tuple[dict[str, Any], str]]
) -> None:
    assert sorted(command for _, command in sidecars.values()) == [
        "ambassador",
        "breaker",
        "log-adapter",
    ]
    for name, (container, _) in sidecars.items():
        assert container.get("restartPolicy") == "Always", f"{name}: not a native sidecar"


def test_probes_watch_the_admin_port(
    sidecars: dict[str, tuple[dict[str, Any], str]], settings: dict[str, Any]
) -> None:
    for name, (container, _) in sidecars.items():
        named = {port["name"]: port["containerPort"] for port in container["ports"]}
        admin = port_of(settings[name]["common"]["admin_listen"])
        for probe, path in (
            ("startupProbe", "/readyz"),
            ("readinessProbe", "/readyz"),
            ("livenessProbe", "/healthz"),
        ):
            get = container[probe]["httpGet"]
            assert get["path"] == path, (name, probe)
            assert named.get(get["port"], get["port"]) == admin, (name, probe)


def test_every_sidecar_variable_is_accepted_by_its_sidecar(
    pod: dict[str, Any], sidecars: dict[str, tuple[dict[str, Any], str]]
) -> None:
    for container in [*pod["initContainers"], *pod["containers"]]:
        env = env_of(container)
        owner_of = {name: command for name, (_, command) in sidecars.items()}
        for variable, owner in sidecar_variables(env).items():
            assert owner_of.get(container["name"]) == owner, f"{container['name']}: {variable}"
        if container["name"] in owner_of:
            effective_settings(owner_of[container["name"]], env)  # asserts exit 0


def test_non_root_and_read_only(pod: dict[str, Any]) -> None:
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
    for container in [*pod["initContainers"], *pod["containers"]]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"]["drop"] == ["ALL"], container["name"]


def test_grace_period_covers_the_drain(
    pod: dict[str, Any], sidecars: dict[str, tuple[dict[str, Any], str]]
) -> None:
    longest = max(drain_seconds(env_of(container)) for container, _ in sidecars.values())
    assert pod["terminationGracePeriodSeconds"] > longest


def test_ports_in_the_pod_are_distinct_and_the_app_uses_its_sidecars(
    pod: dict[str, Any],
    sidecars: dict[str, tuple[dict[str, Any], str]],
    settings: dict[str, Any],
) -> None:
    ports = {"app": 8080}
    for name, (_, command) in sidecars.items():
        ports.update(listeners(command, settings[name]))
    assert len(set(ports.values())) == len(ports), ports
    app = env_of(pod["containers"][0])
    by_command = {command: settings[name] for name, (_, command) in sidecars.items()}
    for variable, command in (("APP_INVENTORY_URL", "ambassador"), ("APP_PAYMENTS_URL", "breaker")):
        url = urlsplit(app[variable])
        assert url.hostname == "127.0.0.1"
        assert url.port == port_of(by_command[command]["routes"][0]["listen"]), variable


def test_writes_go_to_volumes_and_the_adapter_tails_the_app(
    pod: dict[str, Any], sidecars: dict[str, tuple[dict[str, Any], str]], settings: dict[str, Any]
) -> None:
    def mounts(container: dict[str, Any]) -> dict[str, tuple[str, bool]]:
        return {
            m["mountPath"]: (m["name"], m.get("readOnly", False))
            for m in container.get("volumeMounts", [])
        }

    app = pod["containers"][0]
    app_mounts = mounts(app)
    for variable in ("APP_LOG_FILE", "APP_ACCESS_LOG"):
        volume, read_only = app_mounts[posixpath.dirname(env_of(app)[variable])]
        assert not read_only, variable
    adapter_name = next(n for n, (_, command) in sidecars.items() if command == "log-adapter")
    adapter = settings[adapter_name]
    adapter_mounts = mounts(sidecars[adapter_name][0])
    for pattern in adapter["tail_paths"]:
        assert adapter_mounts[posixpath.dirname(pattern)][0] == volume, pattern
    assert adapter_mounts[adapter["state_dir"]][1] is False, "the state dir must be writable"


def test_the_pod_monitor_scrapes_every_sidecar_admin_port(
    sidecars: dict[str, tuple[dict[str, Any], str]], settings: dict[str, Any]
) -> None:
    documents = yaml.safe_load_all((KUBERNETES_DIR / "prometheus" / "podmonitor.yaml").read_text())
    (monitor,) = documents
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    deployment = next(
        d
        for d in yaml.safe_load_all((KUBERNETES_DIR / "deployment.yaml").read_text())
        if d["kind"] == "Deployment"
    )
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    endpoints = {e["port"]: e["path"] for e in monitor["spec"]["podMetricsEndpoints"]}
    admin_ports = {}
    for name, (container, _) in sidecars.items():
        admin_port = port_of(settings[name]["common"]["admin_listen"])
        (named,) = [p["name"] for p in container["ports"] if p["containerPort"] == admin_port]
        admin_ports[named] = "/metrics"
    assert endpoints == admin_ports
