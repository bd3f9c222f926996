"""The images' processes on a read-only root filesystem, writing only to their volumes.

Each process runs as its image runs it (the Dockerfile target's ENTRYPOINT/CMD and ENV, so
PYTHONDONTWRITEBYTECODE=1 included) inside a private mount namespace where ``/`` is remounted
read-only and only the volume directories (temporary directories bound over themselves) stay
writable: what ``read_only: true`` / ``readonlyRootFilesystem`` / ``readOnlyRootFilesystem``
impose. Needs root for ``unshare --mount``; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from deploy_artifacts import dockerfile_targets
from pod import Pod
from support import free_port, http_get

# sh -c SCRIPT sh "<volume dirs>" command...: make each volume its own (writable) mount, then
# remount the root read-only and become the command.
READ_ONLY_ROOT = (
    'for volume in $1; do mount --bind "$volume" "$volume" || exit 97; done; shift; '
    'mount -o remount,bind,ro / || exit 98; exec "$@"'
)


def wait_for(url: str, process: subprocess.Popen[bytes], pod: Pod) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, f"{url}: exited {process.returncode}\n{pod.outputs()}"
        try:
            if http_get(url, 0.5)[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200\n{pod.outputs()}"
        time.sleep(0.02)  # polling interval


def post(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def image_env(target: str) -> dict[str, str]:
    return {k: v for k, v in dockerfile_targets()[target].env.items() if k != "PATH"}


def image_command(target: str, cmd: list[str] | None = None) -> list[str]:
    """What follows ``python -m`` for the image's ENTRYPOINT (+ CMD)."""
    image = dockerfile_targets()[target]
    assert image.entrypoint is not None
    if image.entrypoint[0] == "sidecars":
        return ["sidecars", *image.entrypoint[1:]]
    assert image.entrypoint == ["python", "-m"]
    return cmd or list(image.cmd or [])


@pytest.fixture
def volumes(tmp_path: Path) -> dict[str, Path]:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace: {probe.stderr.strip()} (needs root)")
    found = {name: tmp_path / name for name in ("app-logs", "log-adapter-state")}
    for path in found.values():
        path.mkdir()
    return found


def test_every_image_runs_on_a_read_only_root(volumes: dict[str, Path], tmp_path: Path) -> None:
    bound = " ".join(str(path) for path in volumes.values())
    prefix = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        READ_ONLY_ROOT,
        "sh",
        bound,
    ]
    pod = Pod(prefix, tmp_path)
    ports = {
        name: free_port()
        for name in (
            "inventory",
            "payments",
            "app",
            "breaker",
            "breaker_admin",
            "ambassador",
            "ambassador_admin",
            "forward",
            "adapter_admin",
        )
    }
    logs, state = volumes["app-logs"], volumes["log-adapter-state"]
    sidecar_env = {
        "breaker": {
            "BREAKER_UPSTREAM": f"http://127.0.0.1:{ports['payments']}",
            "BREAKER_LISTEN": f"127.0.0.1:{ports['breaker']}",
            "BREAKER_ADMIN_LISTEN": f"127.0.0.1:{ports['breaker_admin']}",
        },
        "ambassador": {
            "AMBASSADOR_UPSTREAM": f"http://127.0.0.1:{ports['inventory']}",
            "AMBASSADOR_LISTEN": f"127.0.0.1:{ports['ambassador']}",
            "AMBASSADOR_ADMIN_LISTEN": f"127.0.0.1:{ports['ambassador_admin']}",
        },
        "log-adapter": {
            "LOGADAPTER_INPUTS": "forward,tail",
            "LOGADAPTER_FORWARD_LISTEN": f"127.0.0.1:{ports['forward']}",
            "LOGADAPTER_TAIL_PATHS": f"{logs}/*.log",
            "LOGADAPTER_STATE_DIR": str(state),
            "LOGADAPTER_ADMIN_LISTEN": f"127.0.0.1:{ports['adapter_admin']}",
            "SIDECAR_DRAIN_TIMEOUT": "5s",
        },
    }
    targets = {
        "breaker": "circuit-breaker",
        "ambassador": "ambassador",
        "log-adapter": "log-adapter",
    }
    try:
        for name in ("inventory", "payments"):
            pod.start(
                name,
                image_command("examples", ["sidecars_examples.flaky"]),
                {**image_env("examples"), "FLAKY_LISTEN": f"127.0.0.1:{ports[name]}"},
            )
        for name, target in targets.items():
            pod.start(name, image_command(target), {**image_env(target), **sidecar_env[name]})
        pod.start(
            "app",
            image_command("examples"),
            {
                **image_env("examples"),
                "APP_LISTEN": f"127.0.0.1:{ports['app']}",
                "APP_INVENTORY_URL": f"http://127.0.0.1:{ports['ambassador']}",
                "APP_PAYMENTS_URL": f"http://127.0.0.1:{ports['breaker']}",
                "APP_LOG_FILE": f"{logs}/app.log",
                "APP_ACCESS_LOG": f"{logs}/access.log",
            },
        )
        for name, process in pod.processes.items():
            admin = {
                "breaker": "breaker_admin",
                "ambassador": "ambassador_admin",
                "log-adapter": "adapter_admin",
            }.get(name, name)
            path = "readyz" if name in targets else "healthz"
            wait_for(f"http://127.0.0.1:{ports[admin]}/{path}", process.process, pod)

        # The images' HEALTHCHECK commands, under the same read-only root.
        for name, target in targets.items():
            image = dockerfile_targets()[target]
            assert image.healthcheck is not None
            assert image.healthcheck[0] == "sidecars"
            health = subprocess.run(
                [*prefix, sys.executable, "-m", *image.healthcheck],
                env={**image_env(target), **sidecar_env[name], "PATH": os.environ["PATH"]},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert health.returncode == 0, f"{name}: {health.stderr}"

        for _ in range(3):
            status, body = post(f"http://127.0.0.1:{ports['app']}/orders")
            assert status == 201, body
        codes = pod.stop("app")
        codes.update(pod.stop("breaker", "ambassador", "inventory", "payments"))
        codes.update(pod.stop("log-adapter"))
    finally:
        pod.kill_all()
    output = pod.outputs()
    assert codes == dict.fromkeys(codes, 0), output
    assert "Read-only file system" not in output and "Errno 30" not in output, output
    assert (logs / "access.log").stat().st_size > 0, "the app writes to its volume"
    assert any(state.iterdir()), "the adapter keeps its tail offsets in its volume"
    records = pod.processes["log-adapter"].stdout.read_text().splitlines()
    assert any(json.loads(line).get("http", {}).get("path") == "/orders" for line in records)
