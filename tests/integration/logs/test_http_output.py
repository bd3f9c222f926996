"""The http(s):// output: NDJSON batches POSTed to a real HTTP server, retried while it is down
or answering 5xx, dropped (and counted) when it refuses a batch with a 4xx."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest
from http_receiver import Answer, HttpReceiver, Received
from logadapter_support import StartAdapter, wait_for
from support import metric_value


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver().start()
    yield server
    server.stop()


def messages(receiver: HttpReceiver) -> list[str]:
    return [
        json.loads(line)["message"] for body in receiver.bodies() for line in body.splitlines()
    ]


def test_every_record_arrives_although_the_collector_goes_away(
    adapters: StartAdapter, receiver: HttpReceiver
) -> None:
    output = f"{receiver.url}/ingest"
    sender = adapters(
        {
            "LOGADAPTER_INPUTS": "stdin",
            "LOGADAPTER_OUTPUTS": output,
            "LOGADAPTER_SERVICE": "checkout",
            "LOGADAPTER_HTTP_COMPRESSION": "gzip",
            "LOGADAPTER_HTTP_HEADERS": "Authorization=Bearer s3cret,X-Tenant=shop",
        },
        stdin=subprocess.PIPE,
    )
    assert sender.process is not None and sender.process.stdin is not None
    stdin = sender.process.stdin

    def send(start: int, count: int) -> None:
        stdin.write("".join(f"event {n}\n" for n in range(start, start + count)).encode())
        stdin.flush()

    send(0, 1000)
    wait_for(lambda: len(messages(receiver)) >= 1000)
    receiver.stop()
    send(1000, 1000)
    wait_for(
        lambda: metric_value(sender.metrics(), "logadapter_output_errors_total", output=output)
        >= 2
    )
    receiver.start()  # the same port again
    receiver.refuse(2, 503, {"Retry-After": "0"})
    send(2000, 1000)
    settings = sender.status()["settings"]["remote"]
    assert settings["http_headers"] == {"Authorization": "***", "X-Tenant": "***"}
    stdin.close()
    assert sender.process.wait(30) == 0
    counts = Counter(messages(receiver))
    assert set(counts) == {f"event {n}" for n in range(3000)}
    request = receiver.taken[-1]
    assert request.path == "/ingest"
    assert request.headers["content-type"] == "application/x-ndjson"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.headers["x-tenant"] == "shop"
    assert len(receiver.refused) == 2


def test_a_refused_batch_is_counted_as_dropped_and_not_resent(
    adapters: StartAdapter, receiver: HttpReceiver
) -> None:
    receiver.refuse(1, 400)
    sender = adapters(
        {"LOGADAPTER_INPUTS": "stdin", "LOGADAPTER_OUTPUTS": f"{receiver.url}/ingest"},
        stdin=subprocess.PIPE,
    )
    assert sender.process is not None and sender.process.stdin is not None
    sender.process.stdin.write(b"refused\n")
    sender.process.stdin.flush()
    wait_for(
        lambda: metric_value(
            sender.metrics(), "logadapter_records_dropped_total", reason="http_rejected"
        )
        == 1
    )
    sender.process.stdin.write(b"taken\n")
    sender.process.stdin.close()
    assert sender.process.wait(30) == 0
    assert messages(receiver) == ["taken"]
    assert len(receiver.refused) == 1
    assert "http_output_rejected" in [event["event"] for event in sender.process_logs()]


def test_a_batch_too_large_for_the_collector_is_sent_again_in_halves(
    adapters: StartAdapter,
) -> None:
    def at_most_two_lines(request: Received) -> Answer:
        return Answer(413 if request.body.count(b"\n") > 2 else 200, {})

    small = HttpReceiver(at_most_two_lines).start()
    try:
        sender = adapters(
            {"LOGADAPTER_INPUTS": "stdin", "LOGADAPTER_OUTPUTS": f"{small.url}/ingest"},
            stdin=subprocess.PIPE,
        )
        assert sender.process is not None and sender.process.stdin is not None
        sender.process.stdin.write(b"".join(b"line %d\n" % n for n in range(9)))
        sender.process.stdin.close()
        assert sender.process.wait(30) == 0
    finally:
        small.stop()
    assert sorted(messages(small)) == [f"line {n}" for n in range(9)]
    assert small.refused  # the first, whole batch was too large
    assert all(body.count(b"\n") <= 2 for body in small.bodies())
    assert "http_output_rejected" not in [event["event"] for event in sender.process_logs()]
