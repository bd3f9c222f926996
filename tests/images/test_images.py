"""Every image of images/Dockerfile, built for real (buildah) and run as an orchestrator runs
it (podman): read-only root, the image's own non-root user, /healthz and /readyz, the image's
HEALTHCHECK command, real traffic through it, and SIGTERM -> exit 0 within the drain.

Run by ``make images-test`` (SIDECARS_IMAGES_TEST=1); skipped in the everyday suite. Sandbox
needs live in engine.py, not in the Dockerfile.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import engine
import pytest
from engine import Container, RunOptions, started
from fluent.sender import FluentSender
from support import LOOPBACK, free_port, http_get

# The first test waits for every image to build (the session fixture).
pytestmark = pytest.mark.timeout(900)
DRAIN_SECONDS = 3
RUNTIME_USER = 10001
# The run-time environment of each image: no build tools, only the extras its sidecar uses.
NOT_SHIPPED = {"pip", "setuptools", "wheel", "mypy"}
SHIPPED_EXTRAS = {
    "circuit-breaker": {"redis"},
    "ambassador": {"redis"},
    "log-adapter": {"aiohttp", "botocore", "opentelemetry"},
    "examples": {"aiohttp"},
}
OPTIONAL = {"redis", "aiohttp", "botocore", "opentelemetry"}


class Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"upstream saw {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer((LOOPBACK, 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{LOOPBACK}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def wait_until(done: Callable[[], bool], container: Container, what: str) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert container.running(), f"{container.target} exited: {container.logs()}"
        assert time.monotonic() < deadline, f"{container.target}: {what}\n{container.logs()}"
        time.sleep(0.05)  # polling interval


def answers_200(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return http_get(url, 0.5)[0] == 200
        except OSError:
            return False

    return check


def check_runtime(container: Container, health_url: str) -> None:
    """What every image promises once it serves."""
    wait_until(answers_200(health_url), container, f"{health_url} never answered 200")
    status = engine.proc_status(container.pid())
    assert status["Uid"].split() == [str(RUNTIME_USER)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(RUNTIME_USER)] * 4, status["Gid"]
    write = container.exec("python", "-c", "open('/written-at-run-time', 'w')")
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write.stderr
    health = container.healthcheck()
    assert health.returncode == 0, f"HEALTHCHECK: {health.stdout}{health.stderr}"
    probe = "import importlib.util as u, json, sys; "
    probe += "print(json.dumps([name for name in sys.argv[1:] if u.find_spec(name)]))"
    found = container.exec("python", "-c", probe, *sorted(NOT_SHIPPED | OPTIONAL))
    assert found.returncode == 0, found.stderr
    assert set(json.loads(found.stdout)) == SHIPPED_EXTRAS[container.target]


def stops_on_sigterm(container: Container) -> None:
    assert container.terminate(timeout=DRAIN_SECONDS + 15) == 0, container.logs()


@pytest.mark.parametrize(
    ("target", "prefix"), [("circuit-breaker", "BREAKER"), ("ambassador", "AMBASSADOR")]
)
def test_proxy_image(images: dict[str, float], upstream: str, target: str, prefix: str) -> None:
    listen, admin = free_port(), free_port()
    env = {
        f"{prefix}_UPSTREAM": upstream,
        f"{prefix}_LISTEN": f"{LOOPBACK}:{listen}",
        f"{prefix}_ADMIN_LISTEN": f"{LOOPBACK}:{admin}",
        "SIDECAR_DRAIN_TIMEOUT": f"{DRAIN_SECONDS}s",
    }
    with started(target, RunOptions(env)) as container:
        check_runtime(container, f"http://{LOOPBACK}:{admin}/healthz")
        wait_until(answers_200(f"http://{LOOPBACK}:{admin}/readyz"), container, "/readyz")
        assert http_get(f"http://{LOOPBACK}:{listen}/orders/7") == (200, b"upstream saw /orders/7")
        stops_on_sigterm(container)


def test_log_adapter_image(images: dict[str, float]) -> None:
    forward, admin = free_port(), free_port()
    env = {
        # LOGADAPTER_INPUTS is the image's own default (forward).
        "LOGADAPTER_FORWARD_LISTEN": f"{LOOPBACK}:{forward}",
        "LOGADAPTER_ADMIN_LISTEN": f"{LOOPBACK}:{admin}",
        "SIDECAR_DRAIN_TIMEOUT": f"{DRAIN_SECONDS}s",
    }
    with started("log-adapter", RunOptions(env)) as container:
        check_runtime(container, f"http://{LOOPBACK}:{admin}/healthz")
        wait_until(answers_200(f"http://{LOOPBACK}:{admin}/readyz"), container, "/readyz")
        sender = FluentSender("orders", host=LOOPBACK, port=forward)
        line = '{"level": "error", "msg": "card declined"}'
        record = {"log": line, "source": "stdout", "container_id": "c0", "container_name": "/app"}
        try:
            assert sender.emit("docker", record), sender.last_error
        finally:
            sender.close()

        def normalised() -> list[dict[str, object]]:
            records = engine.json_lines(container.logs())
            return [r for r in records if r.get("message") == "card declined"]

        wait_until(lambda: bool(normalised()), container, "the record never came out")
        assert normalised()[0]["level"] == "error"
        assert normalised()[0]["container_name"] == "app"
        stops_on_sigterm(container)


def test_examples_image(images: dict[str, float]) -> None:
    listen = free_port()
    env = {
        "FLAKY_NAME": "payments",
        "FLAKY_LISTEN": f"{LOOPBACK}:{listen}",
        "PROBE_URL": f"http://{LOOPBACK}:{listen}/healthz",
    }
    with started("examples", RunOptions(env, ["sidecars_examples.flaky"])) as container:
        check_runtime(container, f"http://{LOOPBACK}:{listen}/healthz")
        assert http_get(f"http://{LOOPBACK}:{listen}/charge")[0] == 200
        stops_on_sigterm(container)
