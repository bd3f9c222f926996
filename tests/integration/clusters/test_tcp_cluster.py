"""TCP mode over a cluster: two real redis-server replicas behind one route, connections
balanced over both, and a replica that dies ejected."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as redis
from cluster_parts import REPLICA_HOSTS, shared_port
from proxy_parts import Proxies, breaker_env
from support import port_open

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


@pytest.fixture
def redis_replicas() -> Iterator[tuple[list[subprocess.Popen[bytes]], list[str], int]]:
    hosts = list(REPLICA_HOSTS[:2])
    port = shared_port(tuple(hosts))
    processes = [
        subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", host, "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        for host in hosts
    ]
    for host in hosts:
        for _ in range(500):
            if port_open(port, host):
                break
            time.sleep(0.01)  # polling interval, not a readiness guess
        else:
            raise RuntimeError(f"redis-server did not listen on {host}:{port}")
    yield processes, hosts, port
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(5)


async def clients_seen(host: str, port: int) -> int:
    client = redis.Redis(host=host, port=port)
    try:
        info = await client.info("stats")
        return int(info["total_connections_received"])
    finally:
        await client.aclose()


async def test_connections_spread_over_both_replicas_and_a_dead_one_is_ejected(
    redis_replicas: tuple[list[subprocess.Popen[bytes]], list[str], int], proxies: Proxies
) -> None:
    processes, hosts, port = redis_replicas
    proxy = await proxies(
        "breaker",
        breaker_env(
            ",".join(f"tcp://{host}:{port}" for host in hosts),
            protocol="tcp",
            lb="round-robin",
            outlier_consecutive_failures="2",
            failure_threshold="50",
        ),
    )
    before = [await clients_seen(host, port) for host in hosts]
    for n in range(10):
        client = redis.Redis(host="127.0.0.1", port=proxy.port)
        await client.set(f"key{n}", "v")
        await client.aclose()
    after = [await clients_seen(host, port) for host in hosts]
    # 10 relayed connections, half to each, plus our own info connections
    assert [a - b - 1 for a, b in zip(after, before, strict=True)] == [5, 5]

    processes[0].terminate()
    processes[0].wait(5)
    answered = 0
    for n in range(10):
        client = redis.Redis(host="127.0.0.1", port=proxy.port)
        try:
            await client.set(f"later{n}", "v")
            answered += 1
        except redis.ConnectionError:
            pass
        finally:
            await client.aclose()
    assert answered >= 7  # two failures eject the dead replica; the rest go to the live one
    status = await proxy.status()
    (route,) = status["routes"].values()
    states = {e["address"]: e["state"] for e in route["endpoints"]}
    assert states == {f"{hosts[0]}:{port}": "ejected", f"{hosts[1]}:{port}": "healthy"}


async def test_tcp_health_checks_keep_a_replica_that_refuses_out(
    redis_replicas: tuple[list[subprocess.Popen[bytes]], list[str], int], proxies: Proxies
) -> None:
    processes, hosts, port = redis_replicas
    processes[1].terminate()
    processes[1].wait(5)
    proxy = await proxies(
        "breaker",
        breaker_env(
            ",".join(f"tcp://{host}:{port}" for host in hosts),
            protocol="tcp",
            lb="round-robin",
            health_check_path="/",
            health_check_interval="100ms",
            unhealthy_threshold="1",
            outlier_consecutive_failures="0",
        ),
    )
    status = await proxy.status()
    (route,) = status["routes"].values()
    states = {e["address"]: e["state"] for e in route["endpoints"]}
    assert states == {f"{hosts[0]}:{port}": "healthy", f"{hosts[1]}:{port}": "unhealthy"}
    for n in range(6):  # every connection to the live replica: none refused
        client = redis.Redis(host="127.0.0.1", port=proxy.port)
        await client.set(f"key{n}", "v")
        await client.aclose()
