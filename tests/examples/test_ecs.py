"""The ECS task definition, checked offline: botocore's RegisterTaskDefinition input shape, then
the rules the API checks only at registration or at run time."""

from __future__ import annotations

import json
import posixpath
from typing import Any
from urllib.parse import urlsplit

import botocore.session
import pytest
from botocore.model import Shape
from botocore.validate import ParamValidator
from deploy_artifacts import (
    ECS_TASK_DEFINITION,
    dockerfile_targets,
    drain_seconds,
    effective_settings,
    image_target,
    listeners,
    port_of,
    sidecar_variables,
    sidecars_config,
)

# Fargate task sizes: cpu units -> memory MiB allowed.
FARGATE_SIZES = {
    256: {512, 1024, 2048},
    512: set(range(1024, 4097, 1024)),
    1024: set(range(2048, 8193, 1024)),
    2048: set(range(4096, 16385, 1024)),
    4096: set(range(8192, 30721, 1024)),
}
FARGATE_LOG_DRIVERS = {"awslogs", "splunk", "awsfirelens"}
FARGATE_MAX_STOP_TIMEOUT = 120


@pytest.fixture(scope="module")
def task() -> dict[str, Any]:
    return dict(json.loads(ECS_TASK_DEFINITION.read_text()))


@pytest.fixture(scope="module")
def input_shape() -> Shape:
    session = botocore.session.get_session()
    model = session.get_service_model("ecs")
    return model.operation_model("RegisterTaskDefinition").input_shape


@pytest.fixture(scope="module")
def containers(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {container["name"]: container for container in task["containerDefinitions"]}


@pytest.fixture(scope="module")
def sidecars(containers: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Container name -> sidecar command, from its image's Dockerfile target."""
    targets = dockerfile_targets()
    found = {}
    for name, container in containers.items():
        command = targets[image_target(container["image"])].sidecar_command
        if command is not None:
            found[name] = command
    assert sorted(found.values()) == ["ambassador", "breaker", "log-adapter"]
    return found


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("environment", [])}


@pytest.fixture(scope="module")
def settings(containers: dict[str, dict[str, Any]], sidecars: dict[str, str]) -> dict[str, Any]:
    return {
        name: effective_settings(command, env_of(containers[name]))
        for name, command in sidecars.items()
    }


def enum_violations(value: Any, shape: Shape, path: str = "") -> list[str]:
    """String values outside their shape's enum (ParamValidator does not check enums)."""
    problems = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                problems += enum_violations(item, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            problems += enum_violations(item, shape.member, f"{path}[{index}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            problems += enum_violations(item, shape.value, f"{path}.{key}")
    elif shape.type_name == "string" and shape.enum and value not in shape.enum:
        problems.append(f"{path}={value!r}: expected one of {shape.enum}")
    return problems


def test_valid_register_task_definition_input(task: dict[str, Any], input_shape: Shape) -> None:
    report = ParamValidator().validate(task, input_shape)
    assert not report.has_errors(), report.generate_report()
    assert enum_violations(task, input_shape) == []


def test_the_shape_checks_can_fail(task: dict[str, Any], input_shape: Shape) -> None:
    broken = json.loads(json.dumps(task))
    broken["containerDefinitions"][0]["essentail"] = True
    broken["containerDefinitions"][0]["dependsOn"] = [
        {"containerName": "app", "condition": "RUNNING"}
    ]
    assert ParamValidator().validate(broken, input_shape).has_errors()
    assert enum_violations(broken, input_shape)


def test_fargate_compatible(task: dict[str, Any], containers: dict[str, dict[str, Any]]) -> None:
    assert task["networkMode"] == "awsvpc"
    assert "FARGATE" in task["requiresCompatibilities"]
    cpu, memory = int(task["cpu"]), int(task["memory"])
    assert memory in FARGATE_SIZES[cpu], f"{cpu} cpu / {memory} MiB is not a Fargate size"
    assert sum(c.get("cpu", 0) for c in containers.values()) <= cpu
    assert sum(c.get("memory", 0) for c in containers.values()) <= memory
    for name, container in containers.items():
        assert container["logConfiguration"]["logDriver"] in FARGATE_LOG_DRIVERS, name
        assert not container.get("privileged") and not container.get("links"), name
        for mapping in container.get("portMappings", []):
            assert mapping.get("hostPort", mapping["containerPort"]) == mapping["containerPort"]


def test_dependencies_are_sound(containers: dict[str, dict[str, Any]]) -> None:
    for name, container in containers.items():
        for dependency in container.get("dependsOn", []):
            target = dependency["containerName"]
            assert target in containers, f"{name} depends on unknown {target}"
            if dependency["condition"] == "HEALTHY":
                assert "healthCheck" in containers[target], f"{target}: HEALTHY needs a check"

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        nexts = [d["containerName"] for d in containers[start].get("dependsOn", [])]
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in nexts)

    for name in containers:
        assert not reaches(name, name), f"dependency cycle through {name}"


def test_app_starts_after_healthy_sidecars_and_stops_before_them(
    containers: dict[str, dict[str, Any]], sidecars: dict[str, str]
) -> None:
    """ECS stops containers in reverse dependency order: the app first, then its sidecars."""
    app = containers["app"]
    waits = {d["containerName"]: d["condition"] for d in app["dependsOn"]}
    assert waits == dict.fromkeys(sidecars, "HEALTHY")


def test_essential_containers(containers: dict[str, dict[str, Any]]) -> None:
    assert any(c["essential"] for c in containers.values())
    assert containers["app"]["essential"] is True
    for name, container in containers.items():
        policy = container.get("restartPolicy", {})
        if policy.get("enabled"):
            assert policy.get("restartAttemptPeriod", 300) >= 60, name


def test_health_checks(containers: dict[str, dict[str, Any]], sidecars: dict[str, str]) -> None:
    for name, container in containers.items():
        check = container["healthCheck"]
        assert check["command"][0] in ("CMD", "CMD-SHELL"), name
        assert 5 <= check["interval"] <= 300 and 2 <= check["timeout"] <= 60, name
        assert 1 <= check["retries"] <= 10 and 0 <= check["startPeriod"] <= 300, name
        if name in sidecars:
            assert check["command"] == ["CMD", "sidecars", "health", sidecars[name]]


def test_stop_timeout_covers_the_drain(
    containers: dict[str, dict[str, Any]], sidecars: dict[str, str]
) -> None:
    for name in sidecars:
        container = containers[name]
        assert drain_seconds(env_of(container)) < container["stopTimeout"], name
        assert container["stopTimeout"] <= FARGATE_MAX_STOP_TIMEOUT, name


def test_hardened_containers(containers: dict[str, dict[str, Any]]) -> None:
    for name, container in containers.items():
        assert container["readonlyRootFilesystem"] is True, name
        assert container["linuxParameters"]["initProcessEnabled"] is True, name
        uid = container["user"].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{name}: user {container['user']}"


def test_every_sidecar_variable_is_accepted_by_its_sidecar(
    containers: dict[str, dict[str, Any]], sidecars: dict[str, str]
) -> None:
    for name, container in containers.items():
        env = env_of(container)
        for variable, owner in sidecar_variables(env).items():
            assert sidecars.get(name) == owner, f"{name}: {variable} belongs to `{owner}`"
        if name not in sidecars:
            continue
        result = sidecars_config(sidecars[name], env)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_ports_in_the_task_are_distinct_and_mapped(
    containers: dict[str, dict[str, Any]], sidecars: dict[str, str], settings: dict[str, Any]
) -> None:
    """awsvpc: every container shares one network namespace, so listeners must not clash."""
    ports = {"app": 8080}
    for name, command in sidecars.items():
        ports.update(listeners(command, settings[name]))
    assert len(set(ports.values())) == len(ports), ports
    mapped = {m["containerPort"] for c in containers.values() for m in c.get("portMappings", [])}
    assert {p for role, p in ports.items() if role == "app" or "admin" in role} <= mapped


def test_every_admin_port_is_labelled_for_prometheus_discovery(
    containers: dict[str, dict[str, Any]], sidecars: dict[str, str], settings: dict[str, Any]
) -> None:
    """The docker labels the CloudWatch agent's ECS service discovery reads (sd_port_label,
    sd_metrics_path_label, sd_job_name_label) name each sidecar's real admin port."""
    jobs = set()
    for name in sidecars:
        labels = containers[name].get("dockerLabels", {})
        admin_port = port_of(settings[name]["common"]["admin_listen"])
        assert labels.get("ECS_PROMETHEUS_EXPORTER_PORT") == str(admin_port), name
        assert labels.get("ECS_PROMETHEUS_METRICS_PATH") == "/metrics", name
        jobs.add(labels.get("ECS_PROMETHEUS_JOB_NAME"))
    assert None not in jobs and len(jobs) == len(sidecars)


def test_app_calls_its_dependencies_through_the_sidecars(
    containers: dict[str, dict[str, Any]], sidecars: dict[str, str], settings: dict[str, Any]
) -> None:
    app = env_of(containers["app"])
    by_command = {command: settings[name] for name, command in sidecars.items()}
    for variable, command in (("APP_INVENTORY_URL", "ambassador"), ("APP_PAYMENTS_URL", "breaker")):
        url = urlsplit(app[variable])
        listen = by_command[command]["routes"][0]["listen"]
        assert url.hostname == "127.0.0.1" and url.port == port_of(listen), (variable, listen)


def test_app_logs_reach_the_adapter(
    task: dict[str, Any], containers: dict[str, dict[str, Any]], sidecars: dict[str, str]
) -> None:
    routers = [n for n, c in containers.items() if "firelensConfiguration" in c]
    assert routers == [n for n, command in sidecars.items() if command == "log-adapter"]
    assert containers["app"]["logConfiguration"]["logDriver"] == "awsfirelens"
    adapter_env = env_of(containers[routers[0]])
    assert "forward" in adapter_env["LOGADAPTER_INPUTS"].split(",")
    assert adapter_env["LOGADAPTER_FORWARD_LISTEN"] == "unix:///var/run/fluent.sock"
    # The access log goes through a task volume both containers mount at the same path.
    volumes = {volume["name"] for volume in task["volumes"]}

    def mounts(name: str) -> dict[str, tuple[str, bool]]:
        return {
            m["containerPath"]: (m["sourceVolume"], m.get("readOnly", False))
            for m in containers[name].get("mountPoints", [])
        }

    app_mounts, adapter_mounts = mounts("app"), mounts(routers[0])
    for source, _ in [*app_mounts.values(), *adapter_mounts.values()]:
        assert source in volumes, source
    log_dir = posixpath.dirname(env_of(containers["app"])["APP_ACCESS_LOG"])
    assert app_mounts[log_dir][1] is False, "the app must be able to write its log there"
    for pattern in adapter_env["LOGADAPTER_TAIL_PATHS"].split(","):
        assert adapter_mounts[posixpath.dirname(pattern)][0] == app_mounts[log_dir][0]
    assert adapter_mounts[adapter_env["LOGADAPTER_STATE_DIR"]][1] is False, "state: writable"
