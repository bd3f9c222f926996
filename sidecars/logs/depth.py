"""The nesting bound of decoded structures (JSON lines, Forward records).

A record nested deeper than ``MAX_DEPTH`` containers is kept, its too-deep parts replaced by
``MARKER``: every later stage that walks a record (normalisation, redaction, the buffer's
JSON encoding, which refuses 254 levels) then sees at most ``MAX_DEPTH`` levels, plus the
couple that the record's own shape adds (``attributes``). Each cut record is counted; the
processor takes the count (``take_cuts``) into ``logadapter_records_truncated_total``
``{reason="max_depth"}``.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64
"""Containers (objects and arrays) in a row, the outermost object included."""
MARKER = f"[cut: nested deeper than {MAX_DEPTH} levels]"

_cuts = [0]


def take_cuts() -> int:
    """Records cut since the last call."""
    count = _cuts[0]
    _cuts[0] = 0
    return count


def count_cut() -> None:
    """A record cut elsewhere (a Forward entry too deep for msgpack itself)."""
    _cuts[0] += 1


def may_be_too_deep(text: str) -> bool:
    """Whether JSON ``text`` has enough brackets to nest past the bound (a cheap test that
    spares the walk to almost every line)."""
    return len(text) > 2 * MAX_DEPTH and text.count("{") + text.count("[") > MAX_DEPTH


def bounded(value: dict[Any, Any]) -> dict[Any, Any]:
    """``value`` itself when nothing in it nests deeper than ``MAX_DEPTH``; else a copy with
    each container at that depth replaced by ``MARKER`` (counted)."""
    for item in value.values():
        if isinstance(item, (dict, list)):
            break
    else:
        return value
    if _within(value, MAX_DEPTH):
        return value
    _cuts[0] += 1
    cut: dict[Any, Any] = _cut(value, MAX_DEPTH)
    return cut


def _within(value: Any, levels: int) -> bool:
    """Whether ``value`` holds at most ``levels`` containers in a row (recursion bounded by
    ``levels``, so a hostile depth never reaches Python's recursion limit)."""
    if isinstance(value, dict):
        if levels == 0:
            return False
        return all(_within(item, levels - 1) for item in value.values())
    if isinstance(value, list):
        if levels == 0:
            return False
        return all(_within(item, levels - 1) for item in value)
    return True


def _cut(value: Any, levels: int) -> Any:
    if isinstance(value, dict):
        if levels == 0:
            return MARKER
        return {key: _cut(item, levels - 1) for key, item in value.items()}
    if isinstance(value, list):
        if levels == 0:
            return MARKER
        return [_cut(item, levels - 1) for item in value]
    return value
