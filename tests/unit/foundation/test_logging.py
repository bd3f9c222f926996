"""The JSON events of a sidecar process: one envelope for structlog and standard library
records (a fresh interpreter each, as logging is configured once per process)."""

from __future__ import annotations

import json
import subprocess
import sys

from sidecars.logs.normalise import SIDECAR_EVENT_KEYS

PROGRAM = """
import logging
from sidecars.observability import configure_logging, get_logger
configure_logging("ambassador", "info")
get_logger("sidecars.test").warning("from_structlog", n=1)
logging.getLogger("redis.client").warning("from %s", "the standard library")
"""


def test_structlog_and_stdlib_events_share_one_envelope() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=30
    )
    structlog_event, stdlib_event = [json.loads(line) for line in result.stdout.splitlines()]
    assert tuple(structlog_event) == (*SIDECAR_EVENT_KEYS, "n")
    assert tuple(stdlib_event) == SIDECAR_EVENT_KEYS
    assert structlog_event["logger"] == "sidecars.test"
    assert (stdlib_event["logger"], stdlib_event["event"]) == (
        "redis.client",
        "from the standard library",
    )
    for event in (structlog_event, stdlib_event):
        assert (event["sidecar"], event["level"]) == ("ambassador", "warn")
        assert event["timestamp"].endswith("Z") and len(event["timestamp"]) == 27
