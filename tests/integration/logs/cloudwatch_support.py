"""A CloudWatch Logs API for the tests: moto's server (a real HTTP server speaking the API)
behind a small proxy that checks every PutLogEvents call against the real service's limits
(moto does not), and can refuse calls (throttling) or be stopped.

botocore in the adapter signs real requests to the proxy (``LOGADAPTER_CLOUDWATCH_ENDPOINT``)
with fake credentials from the environment.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import botocore.session
from http_receiver import Answer, HttpReceiver, Received
from moto.server import ThreadedMotoServer
from support import LOOPBACK

REGION = "us-east-1"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}
AMZ_JSON = {"Content-Type": "application/x-amz-json-1.1"}
PUT_LOG_EVENTS = "Logs_20140328.PutLogEvents"
THROTTLED = json.dumps(
    {"__type": "ThrottlingException", "message": "Rate exceeded"}
).encode()


def limit_violations(request: dict[str, Any]) -> list[str]:
    """What a PutLogEvents call breaks of the service's documented limits."""
    events = request["logEvents"]
    problems: list[str] = []
    sizes = [len(event["message"].encode()) + 26 for event in events]
    times = [event["timestamp"] for event in events]
    if not 1 <= len(events) <= 10_000:
        problems.append(f"{len(events)} events")
    if sum(sizes) > 1_048_576:
        problems.append(f"{sum(sizes)} bytes")
    if max(sizes) > 262_144:
        problems.append(f"an event of {max(sizes)} bytes")
    if times != sorted(times):
        problems.append("events out of order")
    if times[-1] - times[0] >= 24 * 3600 * 1000:
        problems.append(f"a span of {times[-1] - times[0]} ms")
    return problems


class CloudWatchApi:
    """moto's server behind the checking proxy; ``calls`` are the PutLogEvents it forwarded."""

    def __init__(self) -> None:
        self.moto = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.calls: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.rewrite: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.proxy = HttpReceiver(self._forward).start()
        self.client = botocore.session.Session().create_client(
            "logs",
            region_name=REGION,
            endpoint_url=self.moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    @property
    def endpoint(self) -> str:
        return self.proxy.url

    def env(self, group: str, **extra: str) -> dict[str, str]:
        return {
            **AWS_ENV,
            "LOGADAPTER_OUTPUTS": f"cloudwatch://{group}",
            "LOGADAPTER_CLOUDWATCH_REGION": REGION,
            "LOGADAPTER_CLOUDWATCH_ENDPOINT": self.endpoint,
            **extra,
        }

    def _forward(self, request: Received) -> Answer:
        body = request.body
        if request.headers.get("x-amz-target") == PUT_LOG_EVENTS:
            call = json.loads(body)
            self.violations += limit_violations(call)
            if self.rewrite is not None:
                call = self.rewrite(call)
                body = json.dumps(call).encode()
        else:
            call = None
        forwarded = urllib.request.Request(
            self.moto_url + request.path,
            data=body,
            method="POST",
            headers={
                name: value
                for name, value in request.headers.items()
                if name not in ("host", "content-length")
            },
        )
        try:
            with urllib.request.urlopen(forwarded, timeout=30) as response:
                answer = Answer(response.status, AMZ_JSON, response.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, AMZ_JSON, error.read())
        if call is not None:
            self.calls.append(call)  # the calls the service accepted
        return answer

    def throttle(self, calls: int) -> None:
        self.proxy.refuse(calls, 400, AMZ_JSON, THROTTLED)

    def create(self, group: str, stream: str) -> None:
        self.client.create_log_group(logGroupName=group)
        self.client.create_log_stream(logGroupName=group, logStreamName=stream)

    def streams(self, group: str) -> list[str]:
        answer = self.client.describe_log_streams(logGroupName=group)
        return sorted(stream["logStreamName"] for stream in answer["logStreams"])

    def events(self, group: str, stream: str) -> list[dict[str, Any]]:
        """Every event of a stream, read back with GetLogEvents (following the tokens)."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            arguments: dict[str, Any] = {
                "logGroupName": group, "logStreamName": stream, "startFromHead": True
            }
            if token is not None:
                arguments["nextToken"] = token
            answer = self.client.get_log_events(**arguments)
            events += answer["events"]
            if answer["nextForwardToken"] == token or not answer["events"]:
                return events
            token = answer["nextForwardToken"]

    def records(self, group: str, stream: str) -> list[dict[str, Any]]:
        return [json.loads(event["message"]) for event in self.events(group, stream)]

    def close(self) -> None:
        self.proxy.stop()
        self.moto.stop()
