"""CRI container log lines (containerd, CRI-O: what kubelet writes under /var/log/pods):
``2026-11-26T10:00:00.123456789Z stdout F message``. ``P`` marks a part of a long line
that continues in the next ``P``/``F`` line of the same stream."""

from __future__ import annotations

from typing import NamedTuple


class CriLine(NamedTuple):
    time: str
    stream: str
    partial: bool
    content: str


def unwrap(text: str) -> CriLine | None:
    """The parts of a CRI line, or None when ``text`` is not one."""
    space = text.find(" ")
    if space < 19 or text[4] != "-" or text[space + 7 : space + 8] != " ":
        return None
    stream = text[space + 1 : space + 7]
    if stream not in {"stdout", "stderr"}:
        return None
    tag_end = text.find(" ", space + 8)
    if tag_end < 0:
        tag, content = text[space + 8 :], ""
    else:
        tag, content = text[space + 8 : tag_end], text[tag_end + 1 :]
    if tag[:1] not in ("F", "P"):
        return None
    return CriLine(text[:space], stream, tag[0] == "P", content)
