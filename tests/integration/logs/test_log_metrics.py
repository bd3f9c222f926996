"""Log-derived metrics on /metrics (bounded labels) and the same counts as CloudWatch EMF
records, to stdout or to a cloudwatch:// output."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from cloudwatch_support import CloudWatchApi
from logadapter_support import Adapter, StartAdapter
from support import metric_value


def access_line(status: int) -> str:
    return f'10.0.0.7 - - [26/Nov/2026:10:00:01 +0000] "GET /x HTTP/1.1" {status} 17 "-" "curl"\n'


MIXED = (
    "".join(json.dumps({"service": "web", "level": "error", "msg": "e"}) + "\n" for _ in range(3))
    + "".join(json.dumps({"service": "web", "level": "info", "msg": "i"}) + "\n" for _ in range(2))
    + access_line(200) * 4
    + access_line(404)
    + access_line(503) * 2
)


def run_to_end(adapter: Adapter, text: str) -> None:
    assert adapter.process is not None and adapter.process.stdin is not None
    adapter.process.stdin.write(text.encode())
    adapter.process.stdin.close()
    assert adapter.process.wait(30) == 0


def test_records_and_responses_are_counted_with_bounded_labels(adapters: StartAdapter) -> None:
    adapter = adapters(
        {"LOGADAPTER_INPUTS": "stdin"}, stdin=subprocess.PIPE
    )
    assert adapter.process is not None and adapter.process.stdin is not None
    many = "".join(json.dumps({"service": f"svc{n}", "msg": "m"}) + "\n" for n in range(150))
    adapter.process.stdin.write((MIXED + many).encode())
    adapter.process.stdin.flush()
    adapter.wait_records(12 + 150)
    metrics = adapter.metrics()

    def records(**labels: str) -> float:
        return metric_value(metrics, "logadapter_log_records_total", **labels)

    def responses(**labels: str) -> float:
        return metric_value(metrics, "logadapter_http_responses_total", **labels)

    assert records(service="web", level="error") == 3
    assert records(service="web", level="info") == 2
    assert responses(service="unknown", status_class="2xx") == 4
    assert responses(service="unknown", status_class="4xx") == 1
    assert responses(service="unknown", status_class="5xx") == 2
    # 100 services get a label: web, unknown (the access lines), the first 98 svc<n>
    services = {
        line.split('service="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("logadapter_log_records_total{")
    }
    assert len(services) == 101 and "other" in services
    assert records(service="other") == 52
    assert records() == 12 + 150


def emf_records(lines: list[dict[str, object]]) -> dict[tuple[str, str, str], int]:
    found: dict[tuple[str, str, str], int] = {}
    for record in lines:
        aws = record.get("_aws")
        if not isinstance(aws, dict):
            continue
        (directive,) = aws["CloudWatchMetrics"]
        assert directive["Namespace"] == "shop"
        ((_, dimension),) = directive["Dimensions"]
        ((metric),) = directive["Metrics"]
        name = metric["Name"]
        key = (str(record["service"]), str(record[dimension]), name)
        found[key] = found.get(key, 0) + int(record[name])  # type: ignore[call-overload]
    return found


EXPECTED_RESPONSES = {
    ("unknown", "2xx", "HttpResponses"): 4,
    ("unknown", "4xx", "HttpResponses"): 1,
    ("unknown", "5xx", "HttpResponses"): 2,
}


def test_emf_records_with_the_same_counts_go_to_stdout(adapters: StartAdapter) -> None:
    adapter = adapters(
        {
            "LOGADAPTER_INPUTS": "stdin",
            "LOGADAPTER_EMF_NAMESPACE": "shop",
        },
        stdin=subprocess.PIPE,
    )
    assert adapter.status()["emf"]["output"] == "emf stdout"
    run_to_end(adapter, MIXED)
    counts = emf_records(adapter.records())
    assert {k: v for k, v in counts.items() if k[2] == "HttpResponses"} == EXPECTED_RESPONSES
    assert counts[("web", "error", "LogRecords")] == 3
    assert counts[("web", "info", "LogRecords")] == 2
    assert sum(v for k, v in counts.items() if k[2] == "LogRecords") == 12


@pytest.fixture
def cloudwatch() -> Iterator[CloudWatchApi]:
    api = CloudWatchApi()
    yield api
    api.close()


def test_emf_records_go_to_a_cloudwatch_output_of_their_own(
    adapters: StartAdapter, cloudwatch: CloudWatchApi
) -> None:
    group = f"/ecs/emf-{uuid.uuid4().hex[:8]}"
    adapter = adapters(
        cloudwatch.env(
            group,
            LOGADAPTER_INPUTS="stdin",
            LOGADAPTER_OUTPUTS="stdout",
            LOGADAPTER_EMF_NAMESPACE="shop",
            LOGADAPTER_EMF_OUTPUT=f"cloudwatch://{group}",
            LOGADAPTER_CLOUDWATCH_CREATE="on",
        ),
        stdin=subprocess.PIPE,
    )
    run_to_end(adapter, MIXED)
    assert emf_records(adapter.records()) == {}  # the records' own output has none
    assert cloudwatch.streams(group) == ["logadapter-emf"]
    counts = emf_records(cloudwatch.records(group, "logadapter-emf"))
    assert sum(v for k, v in counts.items() if k[2] == "LogRecords") == 12
    assert counts[("unknown", "5xx", "HttpResponses")] == 2
    puts = [r for r in cloudwatch.proxy.taken if r.headers.get("x-amz-target", "").endswith(
        "PutLogEvents"
    )]
    assert puts and all(r.headers["x-amzn-logs-format"] == "json/emf" for r in puts)
