"""logfmt: ``level=info msg="request done" duration=12ms`` (Heroku, logrus text, go-kit,
log15, slog's TextHandler). Values stay text, as logfmt has no types; the usual keys
(``msg``, ``level``, ``ts``/``time``...) map to the schema like JSON keys do."""

from __future__ import annotations

import re
from typing import Any

import orjson

from sidecars.logs import normalise
from sidecars.logs.model import Record

_START = re.compile(r"[A-Za-z_@][\w.\-/@]*=")
_TOKEN = re.compile(r'([^\s="]+)(=?)("[^"\\]*(?:\\.[^"\\]*)*"|[^\s"]*)|(\S+)')


def looks_like(text: str) -> bool:
    return _START.match(text) is not None


def unquote(value: str) -> str:
    """A double-quoted logfmt value -> its text (Go %q / JSON escapes)."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    inner = value[1:-1]
    if "\\" not in inner:
        return inner
    try:
        text = orjson.loads(value)
    except orjson.JSONDecodeError:
        return inner.replace('\\"', '"')
    return text if isinstance(text, str) else inner


def pairs(text: str) -> tuple[dict[str, str | bool], int]:
    """The ``key=value`` pairs of ``text`` and the number of tokens that were not pairs
    (a bare word is kept as a flag, True, and counted as not a pair)."""
    data: dict[str, str | bool] = {}
    stray = 0
    for key, equals, value, _other in _TOKEN.findall(text):
        if equals:
            data[key] = unquote(value)
            continue
        stray += 1
        if key and not value:
            data[key] = True
    return data, stray


def simple_pairs(text: str) -> dict[str, Any] | None:
    """The common line, parsed with ``str.split`` (several times faster than the regular
    expression): single spaces between ``key=value`` tokens, double-quoted values without
    backslashes. None for anything else, which ``pairs`` then reads."""
    parts = text.split('"') if '"' in text else [text]
    last = len(parts) - 1
    if last % 2 or "\\" in text:
        return None
    data: dict[str, Any] = {}
    for index in range(0, last + 1, 2):
        segment = parts[index]
        if index:  # after a closing quote: a space, then more tokens
            if segment[:1] != " ":
                if index == last and not segment:
                    break
                return None
            segment = segment[1:]
        quoted_key = ""
        if index < last:  # the segment ends with the key of the quoted value that follows
            segment, _, quoted_key = segment.rpartition(" ")
            if len(quoted_key) < 2 or quoted_key[-1] != "=" or "=" in quoted_key[:-1]:
                return None
        if segment:
            for token in segment.split(" "):
                key, equals, value = token.partition("=")
                if not equals or not key:
                    return None
                data[key] = value
        if quoted_key:
            data[quoted_key[:-1]] = parts[index + 1]
    return data


def data(text: str) -> dict[str, Any] | None:
    """The pairs of a logfmt line; None when the line is mostly bare words (a sentence with
    an ``=`` in it)."""
    found = simple_pairs(text)
    if found is None:
        exact, stray = pairs(text)
        if not exact or stray * 2 > len(exact):
            return None
        found = exact
    return found


def parse(text: str, now: float) -> Record | None:
    found = data(text)
    if found is None:
        return None
    record = normalise.from_mapping(found, owned=True)
    record.setdefault("message", "")
    return record
