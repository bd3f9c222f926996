"""The ``otlp+http://host:port[/path]`` and ``otlp+https://...`` outputs: OTLP/HTTP logs.

Each batch becomes one ``ExportLogsServiceRequest`` (records grouped by resource, then by
scope; see ``otlp_mapping``), protobuf (opentelemetry-proto) or JSON (the OTLP/JSON mapping:
hex trace and span ids, 64-bit integers as strings) per ``LOGADAPTER_OTLP_ENCODING``, gzipped
by default, POSTed to ``/v1/logs`` unless the URL names a path, with the headers of
``LOGADAPTER_OTLP_HEADERS`` (CloudWatch's OTLP endpoint takes ``x-aws-log-group`` and
``x-aws-log-stream``) and, with ``LOGADAPTER_OTLP_SIGV4=logs``, SigV4-signed as that endpoint
asks. The answer's ``partialSuccess.rejectedLogRecords`` are counted as dropped (reason
``otlp_rejected``) and not resent, as the OTLP specification asks; retries (429/503
``Retry-After`` included) are ``http_client``'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sidecars.logs.buffer import Batch
from sidecars.logs.sinks.http_client import PAYLOAD_TOO_LARGE, HttpPoster, HttpRejected
from sidecars.logs.sinks.otlp_mapping import OtelLog, Resource, resource_of, scope_of, to_otel
from sidecars.observability import LOG_RECORDS_DROPPED, get_logger
from sidecars.settings import RemoteOutputSettings

DEFAULT_PATH = "/v1/logs"
MAX_DEPTH = 8
"""Values nested deeper are sent as their JSON text (receivers limit message nesting)."""
CONTENT_TYPES = {"protobuf": "application/x-protobuf", "json": "application/json"}
log = get_logger("sidecars.logs.otlp_output")

Groups = dict[Resource, dict[str, list[OtelLog]]]


def endpoint_url(output: str) -> str:
    """``otlp+http://host:4318`` -> ``http://host:4318/v1/logs``; a path given is kept."""
    parts = urlsplit(output.removeprefix("otlp+"))
    path = parts.path if parts.path not in ("", "/") else DEFAULT_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def group_records(records: Iterable[dict[str, Any]], observed: int) -> tuple[Groups, int]:
    groups: Groups = {}
    count = 0
    for record in records:
        scopes = groups.setdefault(resource_of(record), {})
        scopes.setdefault(scope_of(record), []).append(to_otel(record, observed))
        count += 1
    return groups, count


# --- protobuf --------------------------------------------------------------------------------


def _fill(target: AnyValue, value: Any, depth: int = 0) -> None:
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif isinstance(value, float):
        target.double_value = value
    elif value is None:
        return
    elif depth >= MAX_DEPTH:
        target.string_value = orjson.dumps(value, default=str).decode()
    elif isinstance(value, dict):
        values = target.kvlist_value.values
        for key, item in value.items():
            pair = values.add()
            pair.key = str(key)
            _fill(pair.value, item, depth + 1)
    elif isinstance(value, list):
        items = target.array_value.values
        for item in value:
            _fill(items.add(), item, depth + 1)
    else:
        target.string_value = str(value)


def encode_protobuf(groups: Groups, observed: int) -> bytes:
    request = ExportLogsServiceRequest()
    for resource, scopes in groups.items():
        resource_logs = request.resource_logs.add()
        resource_attributes = resource_logs.resource.attributes
        for key, text in resource:
            pair = resource_attributes.add()
            pair.key = key
            pair.value.string_value = text
        for scope, logs in scopes.items():
            scope_logs = resource_logs.scope_logs.add()
            scope_logs.scope.name = scope
            add_record = scope_logs.log_records.add
            for otel in logs:
                out = add_record()
                out.time_unix_nano = otel.time_unix_nano
                out.observed_time_unix_nano = observed
                out.severity_number = otel.severity_number  # type: ignore[assignment]
                out.severity_text = otel.severity_text
                out.body.string_value = otel.body
                add_attribute = out.attributes.add
                for key, value in otel.attributes:
                    pair = add_attribute()
                    pair.key = key if type(key) is str else str(key)
                    if type(value) is str:  # most values: no call
                        pair.value.string_value = value
                    else:
                        _fill(pair.value, value)
                if otel.trace_id is not None:
                    out.trace_id = bytes.fromhex(otel.trace_id)
                if otel.span_id is not None:
                    out.span_id = bytes.fromhex(otel.span_id)
    return request.SerializeToString()


def rejected_protobuf(answer: bytes) -> tuple[int, str]:
    response = ExportLogsServiceResponse.FromString(answer)
    partial = response.partial_success
    return int(partial.rejected_log_records), partial.error_message


# --- JSON ------------------------------------------------------------------------------------


def _json_value(value: Any, depth: int = 0) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        in_range = -(2**63) <= value < 2**63
        return {"intValue": str(value)} if in_range else {"stringValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if value is None:
        return {}
    if depth >= MAX_DEPTH:
        return {"stringValue": orjson.dumps(value, default=str).decode()}
    if isinstance(value, dict):
        pairs = [
            {"key": str(key), "value": _json_value(item, depth + 1)} for key, item in value.items()
        ]
        return {"kvlistValue": {"values": pairs}}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_json_value(item, depth + 1) for item in value]}}
    return {"stringValue": str(value)}


def _json_record(otel: OtelLog, observed: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "timeUnixNano": str(otel.time_unix_nano),
        "observedTimeUnixNano": str(observed),
        "severityNumber": otel.severity_number,
        "severityText": otel.severity_text,
        "body": {"stringValue": otel.body},
        "attributes": [
            {"key": str(key), "value": _json_value(value)} for key, value in otel.attributes
        ],
    }
    if otel.trace_id is not None:
        out["traceId"] = otel.trace_id
    if otel.span_id is not None:
        out["spanId"] = otel.span_id
    return out


def encode_json(groups: Groups, observed: int) -> bytes:
    resource_logs = [
        {
            "resource": {
                "attributes": [
                    {"key": key, "value": {"stringValue": text}} for key, text in resource
                ]
            },
            "scopeLogs": [
                {
                    "scope": {"name": scope},
                    "logRecords": [_json_record(otel, observed) for otel in logs],
                }
                for scope, logs in scopes.items()
            ],
        }
        for resource, scopes in groups.items()
    ]
    return orjson.dumps({"resourceLogs": resource_logs})


def rejected_json(answer: bytes) -> tuple[int, str]:
    response = orjson.loads(answer) if answer.strip() else {}
    partial = response.get("partialSuccess") if isinstance(response, dict) else None
    if not isinstance(partial, dict):
        return 0, ""
    return int(partial.get("rejectedLogRecords") or 0), str(partial.get("errorMessage") or "")


# --- the output ------------------------------------------------------------------------------


class OtlpSink:
    max_batch_bytes = 1024 * 1024

    def __init__(self, name: str, settings: RemoteOutputSettings) -> None:
        self.name = name
        self.encoding = settings.otlp_encoding
        signer = None
        if settings.otlp_sigv4 is not None and settings.cloudwatch_region is not None:
            from sidecars.logs.sinks.sigv4 import SigV4Signer  # noqa: PLC0415 (botocore: optional)

            signer = SigV4Signer(settings.otlp_sigv4, settings.cloudwatch_region)
        self._poster = HttpPoster(
            endpoint_url(name),
            settings.otlp_headers,
            gzip_body=settings.otlp_compression == "gzip",
            signer=signer,
        )
        self.records_rejected = 0

    def _records(self, batch: Batch) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for line in batch.data.splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                LOG_RECORDS_DROPPED.labels("buffer_corrupt").inc()
                log.error("buffer_record_unreadable", output=self.name, bytes=len(line))
        return records

    async def write(self, batch: Batch) -> None:
        records = self._records(batch)
        if records:
            await self._send(records)

    async def _send(self, records: list[dict[str, Any]]) -> None:
        observed = time.time_ns()
        groups, count = group_records(records, observed)
        if self.encoding == "json":
            body, rejected_in = encode_json(groups, observed), rejected_json
        else:
            body, rejected_in = encode_protobuf(groups, observed), rejected_protobuf
        try:
            answer = await self._poster.post(body, CONTENT_TYPES[self.encoding])
        except HttpRejected as error:
            if error.status == PAYLOAD_TOO_LARGE and count > 1:
                log.info("otlp_batch_halved", output=self.name, records=count)
                await self._send(records[: count // 2])
                await self._send(records[count // 2 :])
                return
            self._dropped(count, f"HTTP {error.status}", str(error))
            return
        try:
            rejected, message = rejected_in(answer)
        except (DecodeError, orjson.JSONDecodeError, ValueError, TypeError):
            log.warn("otlp_response_unreadable", output=self.name, bytes=len(answer))
            return
        if rejected:
            self._dropped(min(rejected, count), "partial success", message)

    def _dropped(self, records: int, why: str, message: str) -> None:
        self.records_rejected += records
        LOG_RECORDS_DROPPED.labels("otlp_rejected").inc(records)
        log.error("otlp_records_rejected", output=self.name, records=records, why=why,
                  error=message[:500])

    async def close(self) -> None:
        await self._poster.close()

    def status(self) -> dict[str, Any]:
        return {
            **self._poster.status(),
            "encoding": self.encoding,
            "records_rejected": self.records_rejected,
        }
