"""The cloudwatch:// output against moto's CloudWatch Logs server: batches at and over every
PutLogEvents limit, throttling and an unreachable endpoint, events the service rejects, and
the records read back with GetLogEvents."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cloudwatch_support import CloudWatchApi
from logadapter_support import Adapter, StartAdapter, wait_for
from support import metric_value


@pytest.fixture
def cloudwatch() -> Iterator[CloudWatchApi]:
    api = CloudWatchApi()
    yield api
    api.close()


@pytest.fixture
def group() -> str:
    return f"/ecs/test-{uuid.uuid4().hex[:8]}"  # moto's state is shared by the whole run


def write(adapter: Adapter, text: str, *, close: bool = False) -> None:
    assert adapter.process is not None and adapter.process.stdin is not None
    adapter.process.stdin.write(text.encode())
    adapter.process.stdin.flush()
    if close:
        adapter.process.stdin.close()
        assert adapter.process.wait(60) == 0


def line(service: str, message: str, when: datetime | None = None) -> str:
    fields: dict[str, Any] = {"service": service, "msg": message}
    if when is not None:
        fields["time"] = when.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return json.dumps(fields) + "\n"


def output_errors(adapter: Adapter, output: str) -> float:
    return metric_value(adapter.metrics(), "logadapter_output_errors_total", output=output)


def test_batches_at_and_over_every_limit_arrive_whole(
    adapters: StartAdapter, cloudwatch: CloudWatchApi, group: str
) -> None:
    output = f"cloudwatch://{group}"
    cloudwatch.proxy.stop()  # records pile up into one large batch while the API is away
    sender = adapters(
        cloudwatch.env(
            group,
            LOGADAPTER_INPUTS="stdin",
            LOGADAPTER_CLOUDWATCH_CREATE="on",
            LOGADAPTER_CLOUDWATCH_RETENTION_DAYS="14",
            LOGADAPTER_MAX_LINE_BYTES="1MiB",
        ),
        stdin=subprocess.PIPE,
    )
    write(sender, line("warmup", "first"))
    wait_for(lambda: output_errors(sender, output) >= 1)
    now = datetime.now(UTC)
    oversize = "".join(chr(0x41 + n % 26) for n in range(300_000)) + "é" * 1000
    lines = [line("count", f"small {n}") for n in range(10_001)]  # 10,000 + 1 events
    lines += [line("bytes", f"{n:04d} " + "b" * 1000) for n in range(1100)]  # past 1 MiB
    lines.append(line("oversize", oversize))  # past 256 KiB: split into parts
    # past 24 h, out of order, too old and too far ahead
    lines += [line("span", f"day {n}", now - timedelta(days=n)) for n in (1, 3, 2, 0)]
    lines.append(line("span", "too old", now - timedelta(days=20)))
    lines.append(line("span", "too new", now + timedelta(hours=5)))
    write(sender, "".join(lines))
    wait_for(lambda: sender.status()["buffer"]["records"] >= 1 + len(lines) - 1)
    cloudwatch.proxy.start()
    wait_for(lambda: sender.status()["outputs"][output]["pending"] == 0, 60)
    metrics = sender.metrics()
    for reason in ("too_old", "too_new"):
        assert metric_value(
            metrics, "logadapter_cloudwatch_events_restamped_total", reason=reason
        ) == 1
    write(sender, "", close=True)

    assert cloudwatch.violations == []
    assert cloudwatch.streams(group) == [
        "bytes/unknown", "count/unknown", "oversize/unknown", "span/unknown", "warmup/unknown"
    ]
    counted = cloudwatch.records(group, "count/unknown")
    assert sorted(r["message"] for r in counted) == sorted(f"small {n}" for n in range(10_001))
    def call_bytes(stream: str) -> list[int]:
        return [
            sum(len(event["message"].encode()) + 26 for event in call["logEvents"])
            for call in cloudwatch.calls
            if call["logStreamName"] == stream
        ]

    # Our records make events of over 104 bytes, so 1 MiB binds before 10,000 events (that
    # limit is covered by the unit tests): the first call is filled to within one event.
    for stream in ("count/unknown", "bytes/unknown"):
        sizes = call_bytes(stream)
        assert len(sizes) == 2
        assert 1_048_576 - 1100 < sizes[0] <= 1_048_576
    assert len(cloudwatch.records(group, "bytes/unknown")) == 1100

    parts = cloudwatch.records(group, "oversize/unknown")
    assert len(parts) == 2
    assert [p["attributes"]["part"] for p in parts] == ["1/2", "2/2"]
    assert all(p["attributes"]["truncated"] is True for p in parts)
    assert "".join(p["message"] for p in parts) == oversize

    span = cloudwatch.events(group, "span/unknown")
    messages = [json.loads(event["message"])["message"] for event in span]
    assert set(messages) == {"day 0", "day 1", "day 2", "day 3", "too old", "too new"}
    times = [event["timestamp"] for event in span]
    assert times == sorted(times)
    span_calls = [call for call in cloudwatch.calls if call["logStreamName"] == "span/unknown"]
    assert len(span_calls) >= 3  # 3 days apart: no call spans 24 h
    restamped = {
        json.loads(event["message"])["message"]: event["timestamp"]
        for event in span
        if json.loads(event["message"])["message"] in ("too old", "too new")
    }
    sent_at = time.time() * 1000
    assert all(abs(when - sent_at) < 600_000 for when in restamped.values())


def test_throttling_and_an_unreachable_api_are_retried_without_holding_up_stdout(
    adapters: StartAdapter, cloudwatch: CloudWatchApi, group: str
) -> None:
    output = f"cloudwatch://{group}"
    cloudwatch.create(group, "checkout/unknown")
    cloudwatch.throttle(3)
    sender = adapters(
        cloudwatch.env(
            group,
            LOGADAPTER_INPUTS="stdin",
            LOGADAPTER_OUTPUTS=f"stdout,{output}",
            LOGADAPTER_SERVICE="checkout",
        ),
        stdin=subprocess.PIPE,
    )
    write(sender, "".join(f"event {n}\n" for n in range(1000)))
    wait_for(lambda: len(cloudwatch.calls) >= 1)
    failures = [e for e in sender.process_logs() if e["event"] == "output_write_failed"]
    assert len(failures) == 3
    assert all("ThrottlingException" in failure["error"] for failure in failures)
    assert all(0 <= failure["retry_in"] <= 5 for failure in failures)
    cloudwatch.proxy.stop()
    write(sender, "".join(f"event {n}\n" for n in range(1000, 2000)))
    wait_for(lambda: output_errors(sender, output) >= 5)
    wait_for(lambda: len(sender.records()) == 2000)  # stdout is not held up meanwhile
    cloudwatch.proxy.start()
    write(sender, "".join(f"event {n}\n" for n in range(2000, 3000)), close=True)
    messages = [r["message"] for r in cloudwatch.records(group, "checkout/unknown")]
    assert set(messages) == {f"event {n}" for n in range(3000)}
    assert cloudwatch.violations == []


def test_events_the_service_rejects_are_counted_and_not_resent(
    adapters: StartAdapter, cloudwatch: CloudWatchApi, group: str
) -> None:
    cloudwatch.create(group, "checkout/unknown")

    def age_the_first_two(call: dict[str, Any]) -> dict[str, Any]:
        """As if this host's clock ran 15 days late: moto refuses them (tooOldLogEvent...)."""
        events = call["logEvents"]
        for event in events[:2]:
            event["timestamp"] -= 15 * 24 * 3600 * 1000
        return call

    cloudwatch.rewrite = age_the_first_two
    sender = adapters(
        cloudwatch.env(group, LOGADAPTER_INPUTS="stdin", LOGADAPTER_SERVICE="checkout"),
        stdin=subprocess.PIPE,
    )
    write(sender, "one\ntwo\nthree\nfour\n")
    wait_for(lambda: sum(len(call["logEvents"]) for call in cloudwatch.calls) == 4)
    cloudwatch.rewrite = None
    oldest = (time.time() - 14 * 24 * 3600) * 1000
    aged = [
        json.loads(event["message"])["message"]
        for call in cloudwatch.calls
        for event in call["logEvents"]
        if event["timestamp"] < oldest
    ]
    assert len(aged) >= 2
    wait_for(
        lambda: metric_value(
            sender.metrics(), "logadapter_records_dropped_total", reason="cloudwatch_too_old"
        )
        == len(aged)
    )
    write(sender, "five\n", close=True)
    sent = [json.loads(e["message"])["message"] for c in cloudwatch.calls for e in c["logEvents"]]
    assert sorted(sent) == sorted(["one", "two", "three", "four", "five"])  # none sent twice
    stored = [r["message"] for r in cloudwatch.records(group, "checkout/unknown")]
    assert sorted(stored) == sorted(set(sent) - set(aged))
    rejected = [e for e in sender.process_logs() if e["event"] == "cloudwatch_events_rejected"]
    assert sum(e["events"]["cloudwatch_too_old"] for e in rejected) == len(aged)


def test_a_missing_group_is_waited_for_without_create(
    adapters: StartAdapter, cloudwatch: CloudWatchApi, group: str
) -> None:
    output = f"cloudwatch://{group}"
    sender = adapters(
        cloudwatch.env(group, LOGADAPTER_INPUTS="stdin", LOGADAPTER_SERVICE="checkout"),
        stdin=subprocess.PIPE,
    )
    write(sender, "waiting for the group\n")
    wait_for(lambda: output_errors(sender, output) >= 2)
    failures = [e for e in sender.process_logs() if e["event"] == "output_write_failed"]
    assert "ResourceNotFoundException" in failures[0]["error"]
    cloudwatch.create(group, "checkout/unknown")
    write(sender, "", close=True)
    assert [r["message"] for r in cloudwatch.records(group, "checkout/unknown")] == [
        "waiting for the group"
    ]
