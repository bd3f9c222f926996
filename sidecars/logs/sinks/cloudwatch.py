"""The ``cloudwatch://<log-group>`` output: PutLogEvents through botocore.

botocore signs the requests and finds credentials by its standard chain (environment, the
ECS task role through ``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``, instance profile...); its
own retries are off, so that every retry is this output's: throttling, 5xx, network and
credential errors are retried with full-jitter backoff (``RetryLater``), which holds back only
this output's cursor. Each batch's records are grouped by stream (``LOGADAPTER_CLOUDWATCH_STREAM``)
and cut into calls within the limits (``cloudwatch_events``); calls already accepted are not
sent again when a later call of the same batch is retried. Events CloudWatch refuses in
``rejectedLogEventsInfo`` are counted as dropped and not resent. With
``LOGADAPTER_CLOUDWATCH_CREATE`` a missing group (with ``LOGADAPTER_CLOUDWATCH_RETENTION_DAYS``)
or stream is created; without it, the output waits (retrying) until someone creates it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import botocore.session
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sidecars.logs.buffer import Batch
from sidecars.logs.sinks.cloudwatch_events import (
    MAX_AGE_MS,
    LogEvent,
    events_of,
    plan_calls,
    rejected_counts,
    stream_name,
)
from sidecars.logs.sinks.retry import RetrySchedule
from sidecars.observability import LOG_CLOUDWATCH_RESTAMPED, LOG_RECORDS_DROPPED, get_logger
from sidecars.settings import RemoteOutputSettings

REFUSED_CODES = frozenset({"InvalidParameterException", "DataAlreadyAcceptedException"})
"""Errors about the events themselves: resending them cannot help."""
LOG_EVERY = 60.0
log = get_logger("sidecars.logs.cloudwatch_output")

Call = tuple[str, list[LogEvent]]


def _emf_header(request: Any, **_: Any) -> None:
    """PutLogEvents carrying Embedded Metric Format records must say so."""
    request.headers["x-amzn-logs-format"] = "json/emf"


class CloudWatchSink:
    max_batch_bytes = 4 * 1024 * 1024
    """Larger than one call (1 MiB) so that a batch of small records reaches the 10,000-event
    limit rather than the byte limit."""

    def __init__(self, name: str, settings: RemoteOutputSettings, *, emf: bool = False) -> None:
        self.name = name
        self.emf = emf
        self.group = name.removeprefix("cloudwatch://")
        self.template = settings.cloudwatch_stream
        self.region = settings.cloudwatch_region
        self.endpoint = settings.cloudwatch_endpoint
        self.create = settings.cloudwatch_create
        self.retention_days = settings.cloudwatch_retention_days
        self.max_age_ms = min(MAX_AGE_MS, (self.retention_days or 14) * 24 * 3600 * 1000)
        self.retry = RetrySchedule()
        self._client: Any = None
        self._plan: tuple[int, list[Call], int] | None = None
        """The batch being sent: its start, its calls, how many were accepted."""
        self._logged_at: dict[str, float] = {}
        self.calls = 0
        self.events_sent = 0
        self.events_rejected = 0
        self.restamped: dict[str, int] = {}

    def _make_client(self) -> Any:
        session = botocore.session.get_session()
        client = session.create_client(
            "logs",
            region_name=self.region,
            endpoint_url=self.endpoint,
            config=Config(
                retries={"total_max_attempts": 1},
                connect_timeout=5,
                read_timeout=30,
                user_agent_extra="sidecars-log-adapter",
            ),
        )
        if self.emf:
            client.meta.events.register("before-sign.cloudwatch-logs.PutLogEvents", _emf_header)
        return client

    def _calls(self, batch: Batch) -> list[Call]:
        now_ms = int(time.time() * 1000)
        streams: dict[str, list[LogEvent]] = {}
        for raw in batch.data.splitlines():
            line = raw.decode("utf-8", "replace")
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                LOG_RECORDS_DROPPED.labels("buffer_corrupt").inc()
                log.error("buffer_record_unreadable", output=self.name, bytes=len(raw))
                continue
            events, restamped = events_of(record, line, now_ms, self.max_age_ms)
            if restamped is not None:
                self._restamped(restamped)
            streams.setdefault(stream_name(self.template, record), []).extend(events)
        return [(stream, call) for stream, events in streams.items() for call in plan_calls(events)]

    async def write(self, batch: Batch) -> None:
        if self._plan is None or self._plan[0] != batch.start:
            self._plan = (batch.start, self._calls(batch), 0)
        start, calls, done = self._plan
        if self._client is None:
            self._client = await asyncio.to_thread(self._make_client)
        for index in range(done, len(calls)):
            stream, events = calls[index]
            await self._put(stream, events)
            self._plan = (start, calls, index + 1)
        self._plan = None

    async def _put(self, stream: str, events: list[LogEvent]) -> None:
        request = {
            "logGroupName": self.group,
            "logStreamName": stream,
            "logEvents": [{"timestamp": e.timestamp, "message": e.message} for e in events],
        }
        try:
            try:
                answer = await asyncio.to_thread(self._client.put_log_events, **request)
            except ClientError as error:
                if self._code(error) != "ResourceNotFoundException" or not self.create:
                    raise
                await asyncio.to_thread(self._create, stream)
                answer = await asyncio.to_thread(self._client.put_log_events, **request)
        except ClientError as error:
            code = self._code(error)
            if code in REFUSED_CODES:
                self.retry.succeeded()
                self._dropped({"cloudwatch_rejected": len(events)}, stream, str(error))
                return
            raise self.retry.failed(f"{code}: {error}") from error
        except BotoCoreError as error:  # network, timeouts, no credentials (yet)
            raise self.retry.failed(f"{type(error).__name__}: {error}") from error
        self.retry.succeeded()
        self.calls += 1
        self.events_sent += len(events)
        info = answer.get("rejectedLogEventsInfo")
        if isinstance(info, dict):
            rejected = rejected_counts(info, len(events))
            if rejected:
                self._dropped(rejected, stream, str(info))

    @staticmethod
    def _code(error: ClientError) -> str:
        return str(error.response.get("Error", {}).get("Code", "Unknown"))

    def _create(self, stream: str) -> None:
        """Create the group (and its retention) and the stream, whichever is missing."""
        client = self._client
        try:
            client.create_log_group(logGroupName=self.group)
            log.info("cloudwatch_group_created", output=self.name, group=self.group)
            if self.retention_days is not None:
                client.put_retention_policy(
                    logGroupName=self.group, retentionInDays=self.retention_days
                )
        except ClientError as error:
            if self._code(error) != "ResourceAlreadyExistsException":
                raise
        try:
            client.create_log_stream(logGroupName=self.group, logStreamName=stream)
            log.info("cloudwatch_stream_created", output=self.name, stream=stream)
        except ClientError as error:
            if self._code(error) != "ResourceAlreadyExistsException":
                raise

    def _dropped(self, counts: dict[str, int], stream: str, detail: str) -> None:
        for reason, count in counts.items():
            LOG_RECORDS_DROPPED.labels(reason).inc(count)
            self.events_rejected += count
        log.error(
            "cloudwatch_events_rejected", output=self.name, stream=stream, events=counts,
            detail=detail[:500],
        )

    def _restamped(self, reason: str) -> None:
        LOG_CLOUDWATCH_RESTAMPED.labels(reason).inc()
        self.restamped[reason] = self.restamped.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._logged_at.get(reason, -LOG_EVERY) >= LOG_EVERY:
            self._logged_at[reason] = now
            log.warn(
                "cloudwatch_events_restamped", output=self.name, reason=reason,
                total=self.restamped[reason],
            )

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def status(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "region": self.region,
            "endpoint": self.endpoint,
            "stream_template": self.template,
            "calls": self.calls,
            "events_sent": self.events_sent,
            "events_rejected": self.events_rejected,
            "restamped": dict(self.restamped),
            "consecutive_failures": self.retry.failures,
        }
