"""One parser per log format family.

A parser is a plain function ``parse(text, now) -> Record | None``: the record fields it
found in one line (``timestamp`` already RFC 3339 UTC, ``level`` already normalised,
``message``, and any of ``logger``, ``service``, ``http``, ``error``, ``trace_id``,
``span_id``, ``attributes``), or None when the line is not in its format. ``now`` is the
processor's clock, for formats whose timestamps have no year or no date.
"""

from __future__ import annotations

from collections.abc import Callable

from sidecars.logs.model import Record

Parser = Callable[[str, float], Record | None]
