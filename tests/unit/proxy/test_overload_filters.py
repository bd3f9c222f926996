"""The concurrency filter's queue and the PARK verdict on the socket-free wire: waiting
requests go to the upstream first in, first out, and one whose client left is dropped."""

from __future__ import annotations

from typing import Any

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def request(path: str) -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: app\r\n\r\n" % path.encode()


async def test_waiting_requests_are_sent_in_arrival_order(wire: Any) -> None:
    w = wire(max_requests="1", max_pending="3", queue_timeout="30s")
    clients = [w.client, *(w.connect() for _ in range(3))]
    for n, client in enumerate(clients):
        client.data_received(request(f"/{n}"))
        await w.settle()
    concurrency = w.route.concurrency
    assert concurrency is not None
    assert concurrency.in_flight == 1 and len(concurrency.queue) == 3
    order = []
    for _ in clients:
        sent = w.sent_upstream()
        order.append(sent.split(b" ", 2)[1])
        await w.answer(OK)
    assert order == [b"/0", b"/1", b"/2", b"/3"]
    assert concurrency.in_flight == 0 and not concurrency.queue
    assert len(w.upstreams) == 1  # one connection, reused: one request at a time


async def test_a_waiting_request_whose_client_left_is_dropped(wire: Any) -> None:
    w = wire(max_requests="1", max_pending="2", queue_timeout="30s")
    leaving, staying = w.connect(), w.connect()
    w.client.data_received(request("/held"))
    leaving.data_received(request("/gone"))
    staying.data_received(request("/next"))
    await w.settle()
    concurrency = w.route.concurrency
    assert concurrency is not None and len(concurrency.queue) == 2
    leaving.connection_lost(ConnectionResetError())
    assert len(concurrency.queue) == 1
    assert w.sent_upstream().startswith(b"GET /held ")
    await w.answer(OK)
    assert w.sent_upstream().startswith(b"GET /next ")
    await w.answer(OK)
    assert concurrency.in_flight == 0
