"""The otlp+http:// output against a real OTLP/HTTP receiver that decodes every request with
opentelemetry-proto (protobuf) or as OTLP/JSON: the data model, both encodings, partial
success, 429 with Retry-After, and a receiver that goes away and comes back."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cloudwatch_support import AWS_ENV, REGION
from http_receiver import Answer, HttpReceiver, Received
from logadapter_support import Adapter, StartAdapter, wait_for
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from otlp_support import all_records, decoded
from support import metric_value

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    server = HttpReceiver().start()
    yield server
    server.stop()


def start_sender(adapters: StartAdapter, output: str, **env: str) -> Adapter:
    return adapters(
        {
            "LOGADAPTER_INPUTS": "stdin",
            "LOGADAPTER_OUTPUTS": output,
            "LOGADAPTER_SERVICE": "checkout",
            **env,
        },
        stdin=subprocess.PIPE,
    )


def write(adapter: Adapter, text: str, *, close: bool = False) -> None:
    assert adapter.process is not None and adapter.process.stdin is not None
    adapter.process.stdin.write(text.encode())
    adapter.process.stdin.flush()
    if close:
        adapter.process.stdin.close()
        assert adapter.process.wait(30) == 0


APP_LINE = json.dumps(
    {
        "time": "2026-11-26T10:00:00.123456Z",
        "level": "warning",
        "msg": "card declined",
        "logger": "payments.api",
        "trace_id": TRACE_ID,
        "span_id": SPAN_ID,
        "order": 42,
        "retry": True,
    }
)
ACCESS_LINE = (
    '10.0.0.7 - - [26/Nov/2026:10:00:01 +0000] "GET /orders/7 HTTP/1.1" 503 17 "-" "curl/8"'
)


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_records_map_to_the_otel_log_data_model(
    adapters: StartAdapter, receiver: HttpReceiver, encoding: str
) -> None:
    sender = start_sender(
        adapters,
        f"otlp+{receiver.url}",
        LOGADAPTER_OTLP_ENCODING=encoding,
        LOGADAPTER_OTLP_HEADERS="x-aws-log-group=/ecs/shop,x-aws-log-stream=checkout",
    )
    write(sender, f"{APP_LINE}\n{ACCESS_LINE}\n", close=True)
    request = receiver.taken[0]
    assert request.path == "/v1/logs"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["x-aws-log-group"] == "/ecs/shop"
    assert request.headers["x-aws-log-stream"] == "checkout"
    app, access = all_records(receiver)
    assert app["resource"]["service.name"] == "checkout"
    assert app["scope"] == "payments.api"
    assert app["severity"] == (13, "WARN")
    assert app["body"] == "card declined"
    assert app["time"] == 1795687200123456000
    assert (app["trace_id"], app["span_id"]) == (TRACE_ID, SPAN_ID)
    assert app["attributes"]["order"] == 42
    assert app["attributes"]["retry"] is True
    assert access["scope"] == "sidecars.log-adapter"
    assert access["attributes"]["http.response.status_code"] == 503
    assert access["attributes"]["http.request.method"] == "GET"
    assert access["attributes"]["url.path"] == "/orders/7"
    assert access["trace_id"] == ""


def partial_success(request: Received) -> Answer:
    if request.headers["content-type"] == "application/json":
        body = json.dumps(
            {"partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "too old"}}
        ).encode()
    else:
        response = ExportLogsServiceResponse()
        response.partial_success.rejected_log_records = 2
        response.partial_success.error_message = "too old"
        body = response.SerializeToString()
    return Answer(200, {"Content-Type": request.headers["content-type"]}, body)


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_rejected_records_of_a_partial_success_are_counted_and_not_resent(
    adapters: StartAdapter, encoding: str
) -> None:
    receiver = HttpReceiver(partial_success).start()
    try:
        sender = start_sender(
            adapters, f"otlp+{receiver.url}/custom/logs", LOGADAPTER_OTLP_ENCODING=encoding
        )
        write(sender, "one\ntwo\nthree\n")
        wait_for(lambda: sorted(record["body"] for record in all_records(receiver)) == [
            "one", "three", "two"
        ])
        # the receiver rejected 2 of each request (or all when it held fewer)
        expected = sum(min(2, len(decoded(request))) for request in receiver.taken)
        wait_for(
            lambda: metric_value(
                sender.metrics(), "logadapter_records_dropped_total", reason="otlp_rejected"
            )
            == expected
        )
        output_status = sender.status()["outputs"][f"otlp+{receiver.url}/custom/logs"]
        assert output_status["records_rejected"] == expected
        write(sender, "", close=True)
    finally:
        receiver.stop()
    assert sorted(record["body"] for record in all_records(receiver)) == ["one", "three", "two"]
    assert receiver.taken[0].path == "/custom/logs"
    events = [e for e in sender.process_logs() if e["event"] == "otlp_records_rejected"]
    assert sum(event["records"] for event in events) == expected
    assert events[0]["error"] == "too old"


def test_429_with_retry_after_is_honoured_and_a_stopped_receiver_loses_nothing(
    adapters: StartAdapter, receiver: HttpReceiver
) -> None:
    output = f"otlp+{receiver.url}"
    receiver.refuse(1, 429, {"Retry-After": "2"})
    sender = start_sender(adapters, output)
    write(sender, "".join(f"event {n}\n" for n in range(500)))
    wait_for(lambda: len(all_records(receiver)) >= 500)
    waits = [e for e in sender.process_logs() if e["event"] == "output_write_failed"]
    assert waits[0]["retry_in"] == 2.0  # the receiver's Retry-After, not the backoff
    assert "HTTP 429" in waits[0]["error"]
    receiver.stop()
    write(sender, "".join(f"event {n}\n" for n in range(500, 1000)))
    wait_for(
        lambda: metric_value(sender.metrics(), "logadapter_output_errors_total", output=output)
        >= 3
    )
    receiver.start()
    receiver.refuse(1, 503, {"Retry-After": "0"})
    write(sender, "".join(f"event {n}\n" for n in range(1000, 1500)), close=True)
    bodies = [record["body"] for record in all_records(receiver)]
    assert set(bodies) == {f"event {n}" for n in range(1500)}


def test_requests_are_sigv4_signed_for_cloudwatch_s_otlp_endpoint(
    adapters: StartAdapter, receiver: HttpReceiver
) -> None:
    sender = start_sender(
        adapters,
        f"otlp+{receiver.url}",
        LOGADAPTER_OTLP_SIGV4="logs",
        LOGADAPTER_CLOUDWATCH_REGION=REGION,
        LOGADAPTER_OTLP_HEADERS="x-aws-log-group=/ecs/shop,x-aws-log-stream=checkout",
        **AWS_ENV,
    )
    write(sender, "signed\n", close=True)
    (request,) = receiver.taken
    authorization = request.headers["authorization"]
    scope = f"Credential=testing/{request.headers['x-amz-date'][:8]}/{REGION}/logs/aws4_request"
    assert authorization.startswith(f"AWS4-HMAC-SHA256 {scope}")
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "x-aws-log-group", "content-encoding"} <= set(signed)
    # The signature itself, recomputed by botocore from what arrived
    again = AWSRequest(
        method="POST",
        url=f"{receiver.url}{request.path}",
        data=request.raw,
        headers={name: request.headers[name] for name in signed},
    )
    again.context["timestamp"] = request.headers["x-amz-date"]
    auth = SigV4Auth(Credentials("testing", "testing"), "logs", REGION)
    canonical = auth.canonical_request(again)
    expected = auth.signature(auth.string_to_sign(again, canonical), again)
    assert authorization.endswith(f"Signature={expected}")
    assert [record["body"] for record in all_records(receiver)] == ["signed"]


def test_a_request_too_large_is_sent_again_in_halves(adapters: StartAdapter) -> None:
    receiver = HttpReceiver(lambda request: Answer(413 if len(decoded(request)) > 2 else 200, {}))
    receiver.start()
    try:
        sender = start_sender(adapters, f"otlp+{receiver.url}")
        write(sender, "".join(f"line {n}\n" for n in range(9)), close=True)
    finally:
        receiver.stop()
    assert sorted(record["body"] for record in all_records(receiver)) == [
        f"line {n}" for n in range(9)
    ]
    assert receiver.refused
    assert all(len(decoded(request)) <= 2 for request in receiver.taken)
