"""docker-compose.yml (and docker-compose.fluentd.yml, Docker's log driver added on), checked
offline: the compose schema, then the wiring a runtime relies on."""

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
    COMPOSE_FILE,
    FLUENTD_COMPOSE_FILE,
    dockerfile_targets,
    drain_seconds,
    effective_settings,
    image_target,
    listeners,
    port_of,
    seconds,
    sidecar_variables,
)

APP = "app"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text())["services"])


@pytest.fixture(scope="module")
def sidecars(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Service name -> the sidecar command its image runs (from the Dockerfile target)."""
    targets = dockerfile_targets()
    found = {}
    for name, service in services.items():
        target = service.get("build", {}).get("target") or image_target(service["image"])
        command = targets[target].sidecar_command
        if command is not None:
            found[name] = command
    assert sorted(found.values()) == ["ambassador", "breaker", "log-adapter"]
    return found


@pytest.fixture(scope="module")
def settings(services: dict[str, dict[str, Any]], sidecars: dict[str, str]) -> dict[str, Any]:
    return {
        name: effective_settings(command, services[name].get("environment", {}))
        for name, command in sidecars.items()
    }


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed")
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("path", [COMPOSE_FILE, FLUENTD_COMPOSE_FILE], ids=lambda p: p.name)
def test_matches_the_compose_specification(path: Path) -> None:
    result = check_jsonschema(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_any_engine_can_run_the_stack() -> None:
    """No log driver that only Docker has (podman has no fluentd driver), no top-level `name`
    (compose v1 rejects it): those stay in docker-compose.fluentd.yml, or out."""
    stack = yaml.safe_load(COMPOSE_FILE.read_text())
    assert "name" not in stack
    assert {name for name, service in stack["services"].items() if "logging" in service} == set()
    added = yaml.safe_load(FLUENTD_COMPOSE_FILE.read_text())
    assert set(added) == {"services"}
    assert {name: set(service) for name, service in added["services"].items()} == {
        APP: {"logging"}
    }


def test_the_schema_check_rejects_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("network_mode:", "network_mod:", 1))
    assert check_jsonschema(broken).returncode != 0


def test_every_sidecar_variable_is_accepted_by_its_sidecar(
    services: dict[str, dict[str, Any]], sidecars: dict[str, str]
) -> None:
    for name, service in services.items():
        env = env_of(service)
        for variable, owner in sidecar_variables(env).items():
            assert sidecars.get(name) == owner, f"{name}: {variable} belongs to `{owner}`"
        if name in sidecars:
            effective_settings(sidecars[name], env)  # asserts exit 0


def test_sidecars_share_the_app_network_namespace(
    services: dict[str, dict[str, Any]], sidecars: dict[str, str]
) -> None:
    for name in sidecars:
        assert services[name].get("network_mode") == f"service:{APP}", name
        assert "ports" not in services[name], f"{name}: publish ports on `{APP}`"


def test_listeners_in_the_namespace_are_distinct_and_admin_ports_published(
    services: dict[str, dict[str, Any]], sidecars: dict[str, str], settings: dict[str, Any]
) -> None:
    ports = {"app": port_of(env_of(services[APP]).get("APP_LISTEN", "0.0.0.0:8080"))}
    for name, command in sidecars.items():
        ports.update(listeners(command, settings[name]))
    assert len(set(ports.values())) == len(ports), f"port clash in one namespace: {ports}"
    published = {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in services[APP]["ports"]}
    wanted = {port for role, port in ports.items() if role == "app" or "admin" in role}
    assert wanted <= published, f"not published on `{APP}`: {wanted - published}"


def test_app_calls_its_dependencies_through_the_sidecars(
    services: dict[str, dict[str, Any]], sidecars: dict[str, str], settings: dict[str, Any]
) -> None:
    app = env_of(services[APP])
    by_command = {command: settings[name] for name, command in sidecars.items()}
    for variable, command in (("APP_INVENTORY_URL", "ambassador"), ("APP_PAYMENTS_URL", "breaker")):
        url = urlsplit(app[variable])
        listen = by_command[command]["routes"][0]["listen"]
        assert url.hostname == "127.0.0.1" and url.port == port_of(listen), (variable, listen)


def test_proxies_point_at_real_services(
    services: dict[str, dict[str, Any]], sidecars: dict[str, str], settings: dict[str, Any]
) -> None:
    for name, command in sidecars.items():
        if command == "log-adapter":
            continue
        upstream = urlsplit(settings[name]["routes"][0]["upstream"])
        assert upstream.hostname in services, f"{name}: no service {upstream.hostname}"
        target = env_of(services[upstream.hostname]).get("FLAKY_LISTEN", "0.0.0.0:8080")
        assert upstream.port == port_of(target)


def test_app_logs_reach_the_adapter_by_driver_and_by_shared_volume(
    services: dict[str, dict[str, Any]], sidecars: dict[str, str], settings: dict[str, Any]
) -> None:
    adapter_name = next(name for name, command in sidecars.items() if command == "log-adapter")
    adapter = settings[adapter_name]
    assert {"forward", "tail"} <= set(adapter["inputs"])
    logging = yaml.safe_load(FLUENTD_COMPOSE_FILE.read_text())["services"][APP]["logging"]
    assert logging["driver"] == "fluentd"
    assert port_of(logging["options"]["fluentd-address"]) == port_of(adapter["forward_listen"])
    access_log_dir = posixpath.dirname(env_of(services[APP])["APP_ACCESS_LOG"])
    app_mounts = {m.split(":")[1]: m.split(":")[0] for m in services[APP]["volumes"]}
    adapter_mounts = {m.split(":")[1]: m.split(":")[0] for m in services[adapter_name]["volumes"]}
    volume = app_mounts[access_log_dir]
    for pattern in adapter["tail_paths"]:
        assert adapter_mounts.get(posixpath.dirname(pattern)) == volume, pattern
    writable = {m.split(":")[1] for m in services[adapter_name]["volumes"] if not m.endswith(":ro")}
    assert adapter["state_dir"] in writable, "the state dir must be a writable volume"


def test_start_order_waits_for_health(
    services: dict[str, dict[str, Any]], sidecars: dict[str, str]
) -> None:
    targets = dockerfile_targets()

    def has_healthcheck(name: str) -> bool:
        service = services[name]
        if service.get("healthcheck", {}).get("disable"):
            return False
        target = service.get("build", {}).get("target") or image_target(service["image"])
        return "healthcheck" in service or targets[target].healthcheck is not None

    waited_for_healthy = set()
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert has_healthcheck(dependency), f"{name} waits for {dependency}'s health"
                waited_for_healthy.add(dependency)
    assert set(sidecars) <= waited_for_healthy, "traffic must wait for healthy sidecars"
    for name in sidecars:
        assert APP in services[name]["depends_on"]


def test_read_only_containers_and_a_grace_period_above_the_drain(
    services: dict[str, dict[str, Any]], sidecars: dict[str, str]
) -> None:
    for name, service in services.items():
        assert service.get("read_only") is True, name
    for name in sidecars:
        grace = seconds(services[name].get("stop_grace_period", "10s"))
        assert grace > drain_seconds(env_of(services[name])), name
