"""JSON lines: one object per line (pino, bunyan, zap, logrus, structlog, ECS, ...)."""

from __future__ import annotations

from typing import Any

import orjson

from sidecars.logs import depth, normalise
from sidecars.logs.model import Record


def load_object(text: str) -> dict[str, Any] | None:
    """The JSON object on this line, or None (not JSON, or JSON that is not an object).
    Nesting past ``depth.MAX_DEPTH`` is cut (``depth.bounded``); JSON nested past orjson's
    own limit (1,024) is not JSON to it: the line stays text."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    return depth.bounded(value) if depth.may_be_too_deep(text) else value


def parse(text: str, now: float) -> Record | None:
    data = load_object(text)
    return None if data is None else normalise.from_mapping(data)
