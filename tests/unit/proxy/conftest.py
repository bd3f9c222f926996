"""A socket-free wire for the proxy's protocols: fake transports on both sides, a dialer that
hands out fake upstream connections, and the real Route, ClientConnection and Exchange."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import Callable
from typing import Any

import pytest

from sidecars import settings
from sidecars.proxy.accesslog import AccessLog
from sidecars.proxy.batch import EndOfIteration
from sidecars.proxy.client import ClientConnection
from sidecars.proxy.cluster import Member
from sidecars.proxy.headers import RequestIds
from sidecars.proxy.pool import ConnectFailure, ConnectionPool, Target
from sidecars.proxy.resolver import DnsResolver
from sidecars.proxy.route import Route
from sidecars.proxy.upstream import UpstreamConnection


class FakeTransport:
    """Records what a protocol writes; close() reports connection_lost on the next turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.BaseProtocol) -> None:
        self.loop = loop
        self.protocol = protocol
        self.data = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.eof_written = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.data += data

    def writelines(self, lines: list[bytes]) -> None:
        for line in lines:
            self.write(line)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.7", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def take(self) -> bytes:
        data = bytes(self.data)
        self.data.clear()
        return data


class FakeDialer:
    """Stands in for Dialer (the route's connector): every dial gives a connected
    UpstreamConnection on a fake transport, or raises the ConnectFailure queued in
    ``failures``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.opened = 0
        self.connections: list[UpstreamConnection] = []
        self.failures: list[ConnectFailure] = []
        self.targets: list[Target] = []

    async def connect(self, target: Target, factory: Callable[[], Any], limit: float) -> Any:
        self.targets.append(target)
        if self.failures:
            raise self.failures.pop(0)
        protocol = factory()
        protocol.connection_made(FakeTransport(self.loop, protocol))
        self.opened += 1
        self.connections.append(protocol)
        return protocol


class BytesOutput:
    """The access log's output, into memory (what the process's StdoutWriter writes)."""

    def __init__(self, stream: io.BytesIO) -> None:
        self.stream = stream

    def put(self, data: bytes) -> bool:
        self.stream.write(data)
        return True

    def close(self, timeout: float) -> int:
        return 0


class Wire:
    """One client connection into a Route whose upstream connections are fakes."""

    def __init__(
        self,
        route: Route,
        dialer: FakeDialer,
        log: io.BytesIO,
        end_of_iteration: EndOfIteration,
    ) -> None:
        self.route = route
        self.log = log
        self.end_of_iteration = end_of_iteration
        self.dialer = dialer
        self.client = self.connect()

    @property
    def pool(self) -> ConnectionPool:
        """The pool of the upstream's (only) endpoint."""
        (endpoint,) = self.route.cluster.endpoints.values()
        return endpoint.pool

    def connect(self) -> ClientConnection:
        client = ClientConnection(self.route)
        client.connection_made(FakeTransport(self.route.loop, client))  # type: ignore[arg-type]
        return client

    @property
    def client_transport(self) -> FakeTransport:
        return self.client.transport  # type: ignore[return-value]

    @property
    def upstreams(self) -> list[UpstreamConnection]:
        return self.dialer.connections

    def upstream_transport(self, index: int = -1) -> FakeTransport:
        return self.upstreams[index].transport  # type: ignore[return-value]

    async def settle(self) -> None:
        """Let every callback scheduled so far (dials, retries, flushes) run."""
        for _ in range(10):
            await asyncio.sleep(0)

    async def send(self, data: bytes) -> None:
        self.client.data_received(data)
        await self.settle()

    async def answer(self, data: bytes, index: int = -1) -> None:
        self.upstreams[index].data_received(data)
        await self.settle()

    def received(self) -> bytes:
        return self.client_transport.take()

    def sent_upstream(self, index: int = -1) -> bytes:
        return self.upstream_transport(index).take()

    def access_lines(self) -> list[dict[str, Any]]:
        """Every access line so far (the buffered ones written now)."""
        import orjson  # noqa: PLC0415

        assert self.route.access_log is not None
        self.route.access_log.flush()
        return [orjson.loads(line) for line in self.log.getvalue().splitlines() if line]


WireFactory = Callable[..., Wire]


@pytest.fixture
def wire() -> WireFactory:
    """wire(**env) -> a Wire for a breaker sidecar with BREAKER_<KEY>=value settings;
    ``clock=``, ``timer_clock=`` (connection deadlines), ``randrange=`` and ``randbytes=``
    (trace and span ids) give the route clocks and dice the test drives."""

    def make(
        command: str = "breaker",
        clock: Callable[[], float] | None = None,
        randrange: Callable[[int], int] | None = None,
        timer_clock: Callable[[], float] | None = None,
        randbytes: Callable[[int], bytes] | None = None,
        **env: str,
    ) -> Wire:
        prefix = command.upper() + "_"
        values = {
            prefix + "UPSTREAM": "http://backend.internal:8080",
            prefix + "LISTEN": "127.0.0.1:15001",
        }
        values.update({prefix + key.upper(): value for key, value in env.items()})
        proxy = settings.load_proxy(command, values)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        end_of_iteration = EndOfIteration(loop)
        log = io.BytesIO()
        dialer = FakeDialer(loop)
        route = Route(
            proxy,
            proxy.routes[0],
            loop,
            resolver=DnsResolver(loop, ()),
            request_ids=RequestIds(),
            access_log=AccessLog(end_of_iteration, loop, proxy.sidecar, BytesOutput(log)),
            end_of_iteration=end_of_iteration,
            connector=dialer,
            **({"clock": clock} if clock is not None else {}),
            **({"randrange": randrange} if randrange is not None else {}),
            **({"timer_clock": timer_clock} if timer_clock is not None else {}),
            **({"randbytes": randbytes} if randbytes is not None else {}),
        )
        # Discovery's part, played here: the upstream's name stands for one address.
        upstream = proxy.routes[0].upstream
        target = Target(socket.AF_INET, "192.0.2.10", upstream.port, None)
        route.cluster.update([Member(target, upstream.authority.encode())])
        return Wire(route, dialer, log, end_of_iteration)

    return make
