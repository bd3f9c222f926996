"""HEAD on the admin GET endpoints of a real sidecar process: GET's head, no body."""

from __future__ import annotations

import http.client

from support import LOOPBACK, free_port, running


def test_head_answers_like_get_without_a_body() -> None:
    admin_port = free_port()
    env = {
        "BREAKER_UPSTREAM": "http://127.0.0.1:9",
        "BREAKER_LISTEN": f"{LOOPBACK}:{free_port()}",
        "BREAKER_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
    }
    with running(["breaker"], env, admin_port):
        connection = http.client.HTTPConnection(LOOPBACK, admin_port, timeout=5)
        for path, status in (("/healthz", 200), ("/readyz", 200), ("/nowhere", 404)):
            connection.request("GET", path)
            got = connection.getresponse()
            body = got.read()
            # On the same connection: a body after HEAD's head would be read as the next
            # response's status line.
            connection.request("HEAD", path)
            head = connection.getresponse()
            assert head.read() == b""
            assert (head.status, got.status) == (status, status)
            assert head.getheader("Content-Length") == str(len(body))
            assert head.getheader("Content-Type") == got.getheader("Content-Type")
        connection.request("HEAD", "/metrics")
        metrics = connection.getresponse()
        assert metrics.status == 200 and metrics.read() == b""
        assert int(metrics.getheader("Content-Length") or 0) > 0
        connection.request("GET", "/healthz")  # the connection is still in step
        assert connection.getresponse().read() == b'{"status":"alive"}'
        connection.close()
