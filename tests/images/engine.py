"""buildah and podman as the images test drives them, with what a sandbox needs kept here,
out of images/Dockerfile: chroot isolation, runc with the cgroupfs manager, explicit ulimits,
the vfs storage driver where overlay is unavailable, and this machine's CA certificates."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "images" / "Dockerfile"
STANDIN_BASE = REPO / "images" / "standin-base"
BASE_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
TARGETS = ("circuit-breaker", "ambassador", "log-adapter", "examples")
CONTAINER_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def tag(target: str) -> str:
    return f"localhost/sidecars-test/{target}:latest"


def _engine_env() -> dict[str, str]:
    env = dict(os.environ)
    filesystems = Path("/proc/filesystems").read_text()
    if "STORAGE_DRIVER" not in env and "overlay" not in filesystems:
        env["STORAGE_DRIVER"] = "vfs"
    return env


ENGINE_ENV = _engine_env()
# Explicit: the engines' defaults (nproc 32768, or the host's limits) are more than a
# sandbox may grant, and a sidecar needs far less.
ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]


def available() -> str | None:
    """Why the images cannot be built and run here, or None when they can."""
    for tool in ("buildah", "podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def run(args: list[str], timeout: float = 600, check: bool = True) -> str:
    result = subprocess.run(
        args,
        env=ENGINE_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {result.returncode}\n{result.stderr}")
    return result.stdout


def ensure_base() -> str:
    """The base image: already stored, pulled, or else the debootstrapped stand-in."""
    exists = subprocess.run([*PODMAN, "image", "exists", BASE_IMAGE], env=ENGINE_ENV, check=False)
    if exists.returncode == 0:
        return "stored"
    pulled = subprocess.run(
        ["buildah", "pull", "--quiet", BASE_IMAGE],
        env=ENGINE_ENV,
        capture_output=True,
        timeout=120,
        check=False,
    )
    if pulled.returncode == 0:
        return "pulled"
    run([str(STANDIN_BASE)], timeout=900)
    return "stand-in (debootstrap)"


def _trust_this_machines_cas(config_dir: Path) -> list[str]:
    """Volumes for the build's RUN steps: this machine's CA bundle (PIP_CERT first) and a
    pip.conf naming it, so that pip in the build trusts what pip here trusts (e.g. a proxy's
    own CA). Bind mounts leave nothing in the image."""
    for bundle in (os.environ.get("PIP_CERT"), ssl.get_default_verify_paths().cafile):
        if bundle and Path(bundle).is_file():
            pip_conf = config_dir / "pip.conf"
            pip_conf.write_text(f"[global]\ncert = {CONTAINER_CA_BUNDLE}\n")
            return [
                *("--volume", f"{bundle}:{CONTAINER_CA_BUNDLE}:ro"),
                *("--volume", f"{pip_conf}:/etc/pip.conf:ro"),
            ]
    return []


def build(target: str, config_dir: Path) -> float:
    """Build one target; the seconds it took (the shared stages come from the layer cache)."""
    # --format docker: HEALTHCHECK is a Docker image field that the OCI format drops.
    args = ["buildah", "build", "--isolation", "chroot", "--format", "docker", "--layers"]
    args += ["--pull=never", *ULIMITS, *_trust_this_machines_cas(config_dir)]
    args += ["--file", str(DOCKERFILE), "--target", target]
    started = time.monotonic()
    run([*args, "--tag", tag(target), str(REPO)], timeout=900)
    return time.monotonic() - started


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status of a container's process, as this (host) side sees it."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def json_lines(text: str) -> list[dict[str, object]]:
    """The JSON objects among a container's output lines."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def size_mb(target: str) -> float:
    return int(run([*PODMAN, "image", "inspect", "--format", "{{.Size}}", tag(target)])) / 1e6


@dataclass
class Container:
    name: str
    target: str

    def inspect(self) -> dict[str, object]:
        found = json.loads(run([*PODMAN, "container", "inspect", self.name]))
        return dict(found[0])

    def pid(self) -> int:
        state = self.inspect()["State"]
        assert isinstance(state, dict)
        return int(state["Pid"])

    def running(self) -> bool:
        state = self.inspect()["State"]
        return isinstance(state, dict) and bool(state["Running"])

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PODMAN, "exec", self.name, *command],
            env=ENGINE_ENV,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """The image's HEALTHCHECK command, run now by the engine."""
        return subprocess.run(
            [*PODMAN, "healthcheck", "run", self.name],
            env=ENGINE_ENV,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def logs(self) -> str:
        result = subprocess.run(
            [*PODMAN, "logs", self.name],
            env=ENGINE_ENV,
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stdout + result.stderr

    def terminate(self, timeout: float) -> int:
        """SIGTERM, then the exit code once it stopped by itself within ``timeout``."""
        run([*PODMAN, "kill", "--signal", "TERM", self.name])
        return int(run([*PODMAN, "wait", self.name], timeout=timeout).strip())


@dataclass
class RunOptions:
    env: Mapping[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)


@contextmanager
def started(target: str, options: RunOptions) -> Iterator[Container]:
    """The image run as an orchestrator runs it: read-only root (and no tmpfs added), its
    own user, on the host's network namespace so that it binds the loopback ports given."""
    name = f"sidecars-test-{target}-{os.getpid()}"
    args = [*PODMAN, "run", "--detach", "--name", name, "--network", "host"]
    args += ["--read-only", "--read-only-tmpfs=false", *ULIMITS]
    for key, value in options.env.items():
        args += ["--env", f"{key}={value}"]
    run([*args, tag(target), *options.command])
    container = Container(name, target)
    try:
        yield container
    finally:
        subprocess.run(
            [*PODMAN, "rm", "--force", "--volumes", "--time", "0", name],
            env=ENGINE_ENV,
            capture_output=True,
            check=False,
        )
