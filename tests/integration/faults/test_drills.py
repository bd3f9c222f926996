"""Fault drills at run time through the real ``sidecars`` process: the admin API
(``/faults``, token required) and the ``sidecars fault`` command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import aiohttp
from proxy_parts import Proxies, RunningProxy, Upstreams, ambassador_env, eventually, send

TOKEN = "drill-token"
GOOD = {"Authorization": f"Bearer {TOKEN}"}


def with_token(env: dict[str, str]) -> dict[str, str]:
    return {**env, "SIDECAR_ADMIN_TOKEN": TOKEN}


async def admin(
    session: aiohttp.ClientSession,
    proxy: RunningProxy,
    method: str,
    path: str = "/faults",
    *,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with session.request(
        method,
        proxy.sidecar.admin_url + path,
        json=body,
        headers=GOOD if headers is None else headers,
    ) as response:
        return response.status, await response.json()


def fault_command(
    proxy: RunningProxy, *args: str, token: str = TOKEN
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sidecars",
            "fault",
            "--admin",
            f"127.0.0.1:{proxy.sidecar.admin_port}",
            *args,
        ],
        env={**os.environ, "SIDECAR_ADMIN_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_an_abort_drill_starts_is_listed_and_is_deleted(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies("ambassador", with_token(ambassador_env(upstream, breaker="off")))
    async with aiohttp.ClientSession() as session:
        status, drill = await admin(
            session, proxy, "POST", body={"abort": 503, "percent": 100, "duration": "5m"}
        )
        assert status == 201
        assert (drill["kind"], drill["status"], drill["percent"]) == ("abort", 503, 100.0)
        status, headers, _ = await send(session, proxy)
        assert (status, headers["X-Sidecar-Fault"], headers["X-Sidecar-Attempts"]) == (
            503,
            "abort",
            "3",
        )
        status, listing = await admin(session, proxy, "GET")
        assert status == 200
        assert [d["id"] for d in listing["drills"]] == [drill["id"]]
        assert [d["id"] for d in (await proxy.status())["fault_drills"]] == [drill["id"]]
        status, deleted = await admin(session, proxy, "DELETE", f"/faults/{drill['id']}")
        assert (status, deleted) == (200, {"deleted": [drill["id"]]})
        assert (await admin(session, proxy, "DELETE", f"/faults/{drill['id']}"))[0] == 404
        status, _, body = await send(session, proxy)
    assert (status, body) == (200, b"ok from app")
    assert await proxy.metric("sidecar_faults_injected_total", kind="abort") == 3
    started = proxy.events("fault_drill_started")
    ended = proxy.events("fault_drill_ended")
    assert [(e["id"], e["kind"], e["duration"]) for e in started] == [(drill["id"], "abort", 300.0)]
    assert [(e["id"], e["reason"]) for e in ended] == [(drill["id"], "deleted")]


async def test_a_drill_expires_by_itself(upstreams: Upstreams, proxies: Proxies) -> None:
    upstream = await upstreams()
    proxy = await proxies("ambassador", with_token(ambassador_env(upstream)))
    async with aiohttp.ClientSession() as session:
        status, drill = await admin(
            session, proxy, "POST", body={"reset": True, "percent": 100, "duration": 0.3}
        )
        assert status == 201

        async def gone() -> bool:
            return not (await admin(session, proxy, "GET"))[1]["drills"]

        await eventually(gone, "the drill's expiry")
        status, _, body = await send(session, proxy)
    assert (status, body) == (200, b"ok from app")

    def logged() -> bool:
        return bool(proxy.events("fault_drill_ended"))

    await eventually(logged, "the drill's end logged")
    assert [(e["id"], e["reason"]) for e in proxy.events("fault_drill_ended")] == [
        (drill["id"], "expired")
    ]


async def test_drills_need_the_token(upstreams: Upstreams, proxies: Proxies) -> None:
    upstream = await upstreams()
    with_one = await proxies("ambassador", with_token(ambassador_env(upstream)))
    without = await proxies("ambassador", ambassador_env(upstream))
    body = {"abort": 500, "duration": "10s"}
    async with aiohttp.ClientSession() as session:
        assert (await admin(session, with_one, "POST", body=body, headers={}))[0] == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await admin(session, with_one, "POST", body=body, headers=wrong))[0] == 401
        assert (await admin(session, with_one, "GET", headers=wrong))[0] == 401
        assert (await admin(session, with_one, "DELETE", headers=wrong))[0] == 401
        assert (await admin(session, without, "POST", body=body))[0] == 403
        assert (await admin(session, without, "GET"))[0] == 403
        status, listing = await admin(session, with_one, "GET")
    assert (status, listing["drills"]) == (200, [])
    assert fault_command(with_one, "--list", token="nope").returncode == 1


async def test_bad_drills_and_too_many_are_refused(upstreams: Upstreams, proxies: Proxies) -> None:
    upstream = await upstreams()
    proxy = await proxies("ambassador", with_token(ambassador_env(upstream)))
    async with aiohttp.ClientSession() as session:
        for body in [
            {"abort": 503},  # no duration
            {"abort": 503, "duration": "2h"},  # over the maximum
            {"abort": 42, "duration": "1m"},
            {"abort": 503, "reset": True, "duration": "1m"},
            {"delay": "soon", "duration": "1m"},
            {"reset": True, "percent": 150, "duration": "1m"},
        ]:
            status, answer = await admin(session, proxy, "POST", body=body)
            assert (status, answer["error"]) == (400, "bad_request"), body
        statuses = [
            (
                await admin(
                    session, proxy, "POST", body={"reset": True, "percent": 0, "duration": "1m"}
                )
            )[0]
            for _ in range(17)
        ]
    assert statuses == [201] * 16 + [409]  # at most 16 drills at once


async def test_the_cli_starts_lists_and_clears_drills(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies("ambassador", with_token(ambassador_env(upstream, breaker="off")))
    started = await asyncio.to_thread(
        fault_command,
        proxy,
        "--abort",
        "503",
        "--percent",
        "100",
        "--for",
        "60s",
        "--path-prefix",
        "/x",
    )
    assert started.returncode == 0, started.stderr
    drill = json.loads(started.stdout)
    assert (drill["kind"], drill["status"], drill["path_prefix"]) == ("abort", 503, "/x")
    async with aiohttp.ClientSession() as session:
        assert (await send(session, proxy, path="/x/1"))[0] == 503
        assert (await send(session, proxy, path="/y"))[0] == 200  # outside the prefix
    delay = await asyncio.to_thread(fault_command, proxy, "--delay", "1ms", "--for", "1m")
    assert delay.returncode == 0, delay.stderr
    listed = await asyncio.to_thread(fault_command, proxy, "--list")
    assert [d["kind"] for d in json.loads(listed.stdout)["drills"]] == ["delay", "abort"]
    one = await asyncio.to_thread(fault_command, proxy, "--clear", json.loads(delay.stdout)["id"])
    assert one.returncode == 0, one.stderr
    cleared = await asyncio.to_thread(fault_command, proxy, "--clear")
    assert json.loads(cleared.stdout) == {"deleted": [drill["id"]]}
    refused = await asyncio.to_thread(fault_command, proxy, "--abort", "503", "--for", "3h")
    assert refused.returncode == 1
    assert "bad_request" in refused.stderr


async def test_a_request_scoped_drill_matching_a_header_faults_only_those_requests(
    upstreams: Upstreams, proxies: Proxies
) -> None:
    upstream = await upstreams()
    proxy = await proxies("ambassador", with_token(ambassador_env(upstream)))
    drill = {
        "abort": 500,
        "duration": "1m",
        "scope": "request",
        "header": {"name": "X-User", "value": "tester"},
    }
    async with aiohttp.ClientSession() as session:
        assert (await admin(session, proxy, "POST", body=drill))[0] == 201
        status, headers, _ = await send(session, proxy, headers={"X-User": "tester"})
        assert (status, headers["X-Sidecar-Error"], headers["X-Sidecar-Attempts"]) == (
            500,
            "fault_injected",
            "0",
        )
        assert (await send(session, proxy, headers={"X-User": "other"}))[0] == 200
        assert (await send(session, proxy))[0] == 200
    assert upstream.hits == 2
    assert await proxy.metric("sidecar_retries_total") == 0
