"""JSON lines: one object per line (pino, bunyan, zap, logrus, structlog, ECS, ...)."""

from __future__ import annotations

from typing import Any

import orjson

from sidecars.logs import normalise
from sidecars.logs.model import Record


def load_object(text: str) -> dict[str, Any] | None:
    """The JSON object on this line, or None (not JSON, or JSON that is not an object)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse(text: str, now: float) -> Record | None:
    data = load_object(text)
    return None if data is None else normalise.from_mapping(data)
