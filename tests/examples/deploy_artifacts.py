"""Reading the deployment artifacts the way a runtime would, for the offline checks.

The Dockerfile's targets with their effective settings (inherited through ``FROM <stage>``),
the real ``sidecars config`` run on an artifact's environment, and the listeners a sidecar
opens with that environment (so that checks compare ports with what the process would bind).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dockerfile

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "images" / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
FLUENTD_COMPOSE_FILE = REPO / "docker-compose.fluentd.yml"  # Docker's log driver, added on
ECS_TASK_DEFINITION = REPO / "examples" / "ecs" / "task-definition.json"
KUBERNETES_DIR = REPO / "examples" / "kubernetes"

SIDECAR_PREFIXES = {
    "BREAKER_": "breaker",
    "AMBASSADOR_": "ambassador",
    "LOGADAPTER_": "log-adapter",
}
DEFAULT_DRAIN_SECONDS = 20.0


@dataclass
class DockerTarget:
    """A build stage with what it inherits from the stages it is built ``FROM``."""

    name: str
    base_image: str = ""
    user: str | None = None
    entrypoint: list[str] | None = None
    entrypoint_json: bool = False
    cmd: list[str] | None = None
    healthcheck: list[str] | None = None
    healthcheck_json: bool = False
    stopsignal: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    copies: list[dockerfile.Command] = field(default_factory=list)

    @property
    def sidecar_command(self) -> str | None:
        """``breaker`` for ``ENTRYPOINT ["sidecars", "breaker"]``; None for other images."""
        if self.entrypoint and len(self.entrypoint) == 2 and self.entrypoint[0] == "sidecars":
            return self.entrypoint[1]
        return None


def _env_pairs(command: dockerfile.Command) -> dict[str, str]:
    values = list(command.value)
    return {values[i]: values[i + 1] for i in range(0, len(values) - 1, 2)}


def dockerfile_targets(path: Path = DOCKERFILE) -> dict[str, DockerTarget]:
    targets: dict[str, DockerTarget] = {}
    current: DockerTarget | None = None
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "FROM":
            image = command.value[0]
            name = command.value[2] if len(command.value) == 3 else image
            parent = targets.get(image)
            current = DockerTarget(
                name=name,
                base_image=parent.base_image if parent else image,
                user=parent.user if parent else None,
                entrypoint=parent.entrypoint if parent else None,
                entrypoint_json=parent.entrypoint_json if parent else False,
                cmd=parent.cmd if parent else None,
                healthcheck=parent.healthcheck if parent else None,
                healthcheck_json=parent.healthcheck_json if parent else False,
                stopsignal=parent.stopsignal if parent else None,
                env=dict(parent.env) if parent else {},
                volumes=list(parent.volumes) if parent else [],
                runs=list(parent.runs) if parent else [],
                copies=list(parent.copies) if parent else [],
            )
            targets[name] = current
            continue
        assert current is not None, "instruction before the first FROM"
        if command.cmd == "USER":
            current.user = command.value[0]
        elif command.cmd == "ENTRYPOINT":
            current.entrypoint, current.entrypoint_json = list(command.value), command.json
        elif command.cmd == "CMD":
            current.cmd = list(command.value)
        elif command.cmd == "HEALTHCHECK":
            current.healthcheck = list(command.value[1:])
            current.healthcheck_json = command.json and command.value[0] == "CMD"
        elif command.cmd == "STOPSIGNAL":
            current.stopsignal = command.value[0]
        elif command.cmd == "ENV":
            current.env.update(_env_pairs(command))
        elif command.cmd == "VOLUME":
            current.volumes.extend(command.value)
        elif command.cmd == "RUN":
            current.runs.append(" ".join(command.value))
        elif command.cmd == "COPY":
            current.copies.append(command)
    return targets


def image_target(image: str) -> str:
    """``registry/sidecars/circuit-breaker:0.1.0`` -> ``circuit-breaker`` (the build target)."""
    return image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]


def sidecars_config(command: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """The real ``sidecars config <command>`` with exactly ``env`` (plus PATH)."""
    return subprocess.run(
        [sys.executable, "-m", "sidecars", "config", command],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def effective_settings(command: str, env: Mapping[str, str]) -> dict[str, Any]:
    result = sidecars_config(command, env)
    assert result.returncode == 0, (
        f"sidecars config {command} refused {dict(env)}:\n{result.stderr}"
    )
    return dict(json.loads(result.stdout))


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def listeners(command: str, settings: Mapping[str, Any]) -> dict[str, int]:
    """The TCP ports a sidecar binds with these settings, by role."""
    ports = {f"{command} admin": port_of(settings["common"]["admin_listen"])}
    if command == "log-adapter":
        forward = settings["forward_listen"]
        if "forward" in settings["inputs"] and not forward.startswith("unix://"):
            ports[f"{command} forward"] = port_of(forward)
        if "syslog" in settings["inputs"]:
            ports[f"{command} syslog"] = port_of(settings["syslog_listen"])
    else:
        for route in settings["routes"]:
            ports[f"{command} {route['name']}"] = port_of(route["listen"])
    return ports


def sidecar_variables(env: Mapping[str, str]) -> dict[str, str]:
    """Which sidecar each prefixed variable belongs to (``BREAKER_X`` -> ``breaker``)."""
    return {
        name: command
        for name in env
        for prefix, command in SIDECAR_PREFIXES.items()
        if name.startswith(prefix)
    }


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")


def seconds(text: str | int | float) -> float:
    """``30s``, ``1m30s`` (compose), ``250ms``, ``20`` -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip()):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}[unit]
    return total


def drain_seconds(env: Mapping[str, str]) -> float:
    raw = env.get("SIDECAR_DRAIN_TIMEOUT")
    return seconds(raw) if raw else DEFAULT_DRAIN_SECONDS
