"""Reading what an OTLP/HTTP receiver took: protobuf decoded by opentelemetry-proto, or
OTLP/JSON, flattened to one shape."""

from __future__ import annotations

import json
from typing import Any

from http_receiver import HttpReceiver, Received
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def any_value(value: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as a plain value."""
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in value:
            return value[kind]
    if "intValue" in value:
        return int(value["intValue"])
    if "kvlistValue" in value:
        return {pair["key"]: any_value(pair["value"]) for pair in value["kvlistValue"]["values"]}
    if "arrayValue" in value:
        return [any_value(item) for item in value["arrayValue"]["values"]]
    return None


def proto_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


def decoded(request: Received) -> list[dict[str, Any]]:
    """Every log record of a request, flattened with its resource and scope, one shape for
    both encodings (protobuf decoded by opentelemetry-proto)."""
    out: list[dict[str, Any]] = []
    if request.headers["content-type"] == "application/x-protobuf":
        message = ExportLogsServiceRequest.FromString(request.body)
        for resource_logs in message.resource_logs:
            resource = {kv.key: kv.value.string_value for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    out.append(
                        {
                            "resource": resource,
                            "scope": scope_logs.scope.name,
                            "time": record.time_unix_nano,
                            "severity": (record.severity_number, record.severity_text),
                            "body": record.body.string_value,
                            "attributes": {
                                kv.key: proto_value(kv.value) for kv in record.attributes
                            },
                            "trace_id": record.trace_id.hex(),
                            "span_id": record.span_id.hex(),
                        }
                    )
        return out
    assert request.headers["content-type"] == "application/json"
    message_json = json.loads(request.body)
    for resource_logs in message_json["resourceLogs"]:
        resource = {
            kv["key"]: any_value(kv["value"]) for kv in resource_logs["resource"]["attributes"]
        }
        for scope_logs in resource_logs["scopeLogs"]:
            for record in scope_logs["logRecords"]:
                out.append(
                    {
                        "resource": resource,
                        "scope": scope_logs["scope"]["name"],
                        "time": int(record["timeUnixNano"]),
                        "severity": (record["severityNumber"], record["severityText"]),
                        "body": record["body"]["stringValue"],
                        "attributes": {
                            kv["key"]: any_value(kv["value"]) for kv in record["attributes"]
                        },
                        "trace_id": record.get("traceId", ""),
                        "span_id": record.get("spanId", ""),
                    }
                )
    return out


def all_records(receiver: HttpReceiver) -> list[dict[str, Any]]:
    return [record for request in list(receiver.taken) for record in decoded(request)]
