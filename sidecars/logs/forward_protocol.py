"""Fluentd Forward protocol v1: the msgpack codec shared by the forward input and output.

Sans-IO: values and bytes in, values and bytes out. The server side decodes the four carrier
modes (Message, Forward, PackedForward, CompressedPackedForward), EventTime (ext type 0) and
the ``chunk`` option; the client side encodes PackedForward with a ``chunk`` and checks the
``{"ack": chunk}`` answer. The optional shared-key handshake (HELO, PING, PONG) is here too.

fluent-logger's ``FluentSender`` sends Message mode without ``chunk``, so it cannot know what
a server kept; the at-least-once sender of the forward output is built on this module instead,
reusing fluent-logger's ``EventTime`` for the ext type.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgpack
from fluent.sender import EventTime

from sidecars.logs import depth

EVENT_TIME_EXT = 0
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""Largest msgpack message a connection may buffer (Fluentd's chunks default to 8 MB)."""
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
"""Largest CompressedPackedForward payload once inflated: a gzip bomb stops here."""
UDP_HEARTBEAT = b"\x00"

EventTuple = tuple[float | None, dict[str, Any]]
_EVENT_TIME = struct.Struct(">II")


class ForwardProtocolError(ValueError):
    """Well-formed msgpack that is not a Forward protocol message."""


class BadEntry(ForwardProtocolError):
    """One entry that is not ``[time, record]`` (a bad time, a record that is not a map): that
    entry is dropped, its neighbours kept."""


@dataclass(slots=True)
class _Dropped:
    """The bad entries of one request: how many, and what was wrong with the first."""

    count: int = 0
    first: str = ""

    def add(self, error: BadEntry) -> None:
        if not self.count:
            self.first = str(error)
        self.count += 1


@dataclass(frozen=True, slots=True)
class ForwardMessage:
    """One request of any carrier mode: its events, and the chunk id to acknowledge."""

    tag: str
    events: list[EventTuple]
    chunk: str | None
    mode: str
    clean: bool = False
    """Every string of the events is known to be valid UTF-8 (PackedForward entries that
    decoded strictly): no undecodable bytes to repair."""
    dropped: int = 0
    """Entries left out of ``events`` as bad (``BadEntry``)."""
    dropped_detail: str = ""
    """What was wrong with the first of them."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A msgpack ``nil`` sent over TCP to check the server is alive; nothing to answer."""


def new_unpacker(max_buffer_size: int = MAX_MESSAGE_BYTES) -> Any:
    """A streaming unpacker bounded for untrusted peers.

    Strings decode with ``surrogateescape``: Fluentd's out_forward sends PackedForward entries
    as msgpack ``str`` holding binary, which must re-encode to the exact bytes; invalid UTF-8
    in record text is repaired (and counted) by the forward input, not here.
    """
    return msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        strict_map_key=False,
        max_buffer_size=max_buffer_size,
    )


def event_time(value: Any) -> float | None:
    """EventTime ext (uint32 seconds, uint32 nanoseconds), integer or float seconds."""
    if isinstance(value, msgpack.ExtType):
        if value.code != EVENT_TIME_EXT or len(value.data) != 8:
            raise BadEntry(f"time ext type {value.code} of {len(value.data)} bytes")
        seconds, nanoseconds = struct.unpack(">II", value.data)
        return float(seconds) + float(nanoseconds) / 1e9
    if isinstance(value, bool):
        raise BadEntry("time is a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if value is None:
        return None
    raise BadEntry(f"time is a {type(value).__name__}")


def _entry(value: Any) -> EventTuple:
    if not isinstance(value, list) or len(value) != 2:
        raise BadEntry("an entry is not [time, record]")
    record = value[1]
    if not isinstance(record, dict):
        raise BadEntry(f"a record is a {type(record).__name__}, not a map")
    return event_time(value[0]), record


def _entries(items: Iterable[Any], dropped: _Dropped) -> list[EventTuple]:
    """``_entry`` of each item, the common one (an EventTime decoded by ``_event_time_ext``,
    and a map) inline: a frame holds hundreds of entries. A bad one is left out, counted in
    ``dropped``."""
    entries: list[EventTuple] = []
    append = entries.append
    for item in items:
        if item.__class__ is list and len(item) == 2:
            stamp, record = item
            if stamp.__class__ is float and record.__class__ is dict:
                append((stamp, record))
                continue
        try:
            append(_entry(item))
        except BadEntry as error:
            dropped.add(error)
    return entries


def _event_time_ext(code: int, data: bytes) -> Any:
    """msgpack's ``ext_hook`` for PackedForward entries: an EventTime becomes its epoch
    seconds at once (what ``event_time`` makes of it), any other ext an ``ExtType``."""
    if code == EVENT_TIME_EXT and len(data) == 8:
        seconds, nanoseconds = _EVENT_TIME.unpack(data)
        return float(seconds) + float(nanoseconds) / 1e9
    return msgpack.ExtType(code, data)


def _inflate(data: bytes) -> bytes:
    """Gzip payload, possibly several members concatenated (the spec allows it)."""
    out: list[bytes] = []
    total = 0
    while data:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(data, MAX_DECOMPRESSED_BYTES - total + 1)
        except zlib.error as error:
            raise ForwardProtocolError(f"bad gzip payload: {error}") from None
        total += len(chunk)
        if total > MAX_DECOMPRESSED_BYTES or inflater.unconsumed_tail:
            raise ForwardProtocolError("gzip payload inflates past the limit")
        if not inflater.eof:
            raise ForwardProtocolError("truncated gzip payload")
        out.append(chunk)
        data = inflater.unused_data
    return b"".join(out)


def _entries_unpacker(payload: bytes, errors: str) -> Any:
    unpacker = msgpack.Unpacker(
        raw=False,
        unicode_errors=errors,
        strict_map_key=False,
        max_buffer_size=max(len(payload), 1),
        ext_hook=_event_time_ext,
    )
    unpacker.feed(payload)
    return unpacker


def _packed_entries(payload: bytes) -> tuple[list[EventTuple], bool, _Dropped]:
    """The entries, whether all their strings are valid UTF-8, and the bad ones left out:
    decoded strictly first (then nothing needs repair downstream), else again keeping
    undecodable bytes as surrogates, as ``new_unpacker`` does."""
    for errors in ("strict", "surrogateescape"):
        dropped = _Dropped()
        try:
            entries = _entries(_entries_unpacker(payload, errors), dropped)
            return entries, errors == "strict", dropped
        except ForwardProtocolError:
            raise
        except UnicodeDecodeError:
            continue
        except msgpack.exceptions.StackError:
            dropped = _Dropped()
            return _entries_one_by_one(payload, dropped), False, dropped
        except ValueError as error:
            raise ForwardProtocolError(f"bad PackedForward entries: {error}") from None
    raise AssertionError("unreachable: surrogateescape decodes any bytes")


TOO_DEEP_FOR_MSGPACK = {"message": depth.MARKER}
"""What stands for an entry nested past msgpack's own limit (1,024 levels): it cannot be
decoded at all, and its neighbours must not be lost with it."""


def _entries_one_by_one(payload: bytes, dropped: _Dropped) -> list[EventTuple]:
    """Entries decoded apart, found by their byte extent (``object_end``): one nested past
    msgpack's limit becomes ``TOO_DEEP_FOR_MSGPACK`` (counted as a depth cut)."""
    entries: list[EventTuple] = []
    at = 0
    while at < len(payload):
        end = object_end(payload, at)
        try:
            entries += _entries(_entries_unpacker(payload[at:end], "surrogateescape"), dropped)
        except msgpack.exceptions.StackError:
            depth.count_cut()
            entries.append((None, dict(TOO_DEEP_FOR_MSGPACK)))
        except ValueError as error:
            raise ForwardProtocolError(f"bad PackedForward entries: {error}") from None
        at = end
    return entries


_FIXED_SIZES = {
    0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}
_SIZED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin, str: length bytes
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}  # ext: length bytes, then a type byte
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # array, map


def object_end(data: bytes, start: int) -> int:
    """Where the msgpack object at ``start`` ends, at any depth: a count of the items still
    due, no recursion."""
    due, at = 1, start
    while due:
        if at >= len(data):
            raise ForwardProtocolError("truncated PackedForward entry")
        due -= 1
        first = data[at]
        at += 1
        if first <= 0x7F or first >= 0xE0:
            continue
        if first <= 0x8F:
            due += 2 * (first & 0x0F)
        elif first <= 0x9F:
            due += first & 0x0F
        elif first <= 0xBF:
            at += first & 0x1F
        elif first in _FIXED_SIZES:
            at += _FIXED_SIZES[first]
        elif first in _SIZED:
            width = _SIZED[first]
            at += width + int.from_bytes(data[at : at + width], "big")
        elif first in _EXT:
            width = _EXT[first]
            at += width + 1 + int.from_bytes(data[at : at + width], "big")
        elif first in _CONTAINERS:
            width, per_item = _CONTAINERS[first]
            due += per_item * int.from_bytes(data[at : at + width], "big")
            at += width
        else:
            raise ForwardProtocolError(f"bad msgpack byte 0x{first:02x}")
    if at > len(data):
        raise ForwardProtocolError("truncated PackedForward entry")
    return at


def decode_message(value: Any) -> ForwardMessage | Heartbeat:
    """Detect the carrier mode from the second element, as the spec says servers must."""
    if value is None:
        return Heartbeat()
    if not isinstance(value, list) or len(value) < 2:
        raise ForwardProtocolError(f"a request is a {type(value).__name__}, not [tag, ...]")
    tag = value[0]
    if not isinstance(tag, str):
        raise ForwardProtocolError("the tag is not a string")
    second = value[1]
    clean = False
    dropped = _Dropped()
    if isinstance(second, list):
        option = value[2] if len(value) > 2 else None
        events, mode = _entries(second, dropped), "forward"
    elif isinstance(second, (bytes, str)):
        option = value[2] if len(value) > 2 else None
        payload = second.encode("utf-8", "surrogateescape") if isinstance(second, str) else second
        compressed = isinstance(option, dict) and option.get("compressed") == "gzip"
        if compressed:
            payload = _inflate(payload)
        events, clean, dropped = _packed_entries(payload)
        mode = "compressed_packed_forward" if compressed else "packed_forward"
    else:
        if len(value) < 3:
            raise ForwardProtocolError("a Message has no record")
        option = value[3] if len(value) > 3 else None
        events, mode = _entries([[second, value[2]]], dropped), "message"
    if option is not None and not isinstance(option, dict):
        raise ForwardProtocolError("the option is not a map")
    chunk = option.get("chunk") if option else None
    if chunk is not None and not isinstance(chunk, str):
        raise ForwardProtocolError("the chunk option is not a string")
    return ForwardMessage(tag, events, chunk, mode, clean, dropped.count, dropped.first)


def encode_ack(chunk: str) -> bytes:
    return bytes(msgpack.packb({"ack": chunk}))


def is_ack_for(value: Any, chunk: str) -> bool:
    return isinstance(value, dict) and value.get("ack") == chunk


def new_chunk_id() -> str:
    """Base64 of a 128-bit unique id, as the spec describes the ``chunk`` option."""
    return base64.b64encode(os.urandom(16)).decode()


def rfc3339_to_event_time(timestamp: Any, fallback: float) -> Any:
    """An output record's RFC 3339 ``timestamp`` as EventTime; ``fallback`` when unreadable."""
    seconds = fallback
    if isinstance(timestamp, str):
        try:
            seconds = datetime.fromisoformat(timestamp).timestamp()
        except ValueError:
            seconds = fallback
    whole = int(seconds)
    return EventTime(whole, round((seconds - whole) * 1e9) % 1_000_000_000)


def encode_packed_forward(tag: str, entries: list[tuple[Any, Any]], chunk: str) -> bytes:
    """PackedForward with ``bin`` entries (spec v2 advice) and the ``chunk``/``size`` options."""
    packer = msgpack.Packer(use_bin_type=True)
    stream = b"".join(packer.pack([time, record]) for time, record in entries)
    return bytes(packer.pack([tag, stream, {"chunk": chunk, "size": len(entries)}]))


# --- shared-key handshake (spec v1 "Handshake Messages") ---------------------------------


def _digest(salt: bytes, hostname: str, nonce: bytes, shared_key: str) -> str:
    return hashlib.sha512(salt + hostname.encode() + nonce + shared_key.encode()).hexdigest()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise ForwardProtocolError(f"expected str or bin, got {type(value).__name__}")


def encode_helo(nonce: bytes) -> bytes:
    """Server -> client: the nonce; an empty ``auth`` salt means no username/password."""
    packer = msgpack.Packer(use_bin_type=True)
    return bytes(packer.pack(["HELO", {"nonce": nonce, "auth": b"", "keepalive": True}]))


def decode_helo(value: Any) -> bytes:
    """The nonce of a HELO."""
    if not (isinstance(value, list) and len(value) == 2 and value[0] == "HELO"):
        raise ForwardProtocolError("expected HELO")
    options = value[1]
    if not isinstance(options, dict) or "nonce" not in options:
        raise ForwardProtocolError("HELO without a nonce")
    return _as_bytes(options["nonce"])


def encode_ping(hostname: str, nonce: bytes, shared_key: str) -> tuple[bytes, bytes]:
    """Client -> server; returns the message and the salt the PONG must be checked with."""
    salt = os.urandom(16).hex().encode()
    digest = _digest(salt, hostname, nonce, shared_key)
    packer = msgpack.Packer(use_bin_type=True)
    return bytes(packer.pack(["PING", hostname, salt, digest, "", ""])), salt


@dataclass(frozen=True, slots=True)
class PingCheck:
    ok: bool
    reason: str
    salt: bytes


def check_ping(value: Any, nonce: bytes, shared_key: str) -> PingCheck:
    if not (isinstance(value, list) and len(value) == 6 and value[0] == "PING"):
        raise ForwardProtocolError("expected PING")
    hostname, salt, digest = value[1], _as_bytes(value[2]), value[3]
    if not isinstance(hostname, str) or not isinstance(digest, str):
        raise ForwardProtocolError("malformed PING")
    if digest != _digest(salt, hostname, nonce, shared_key):
        return PingCheck(False, "shared_key mismatch", salt)
    return PingCheck(True, "", salt)


def encode_pong(check: PingCheck, server_hostname: str, nonce: bytes, shared_key: str) -> bytes:
    digest = _digest(check.salt, server_hostname, nonce, shared_key) if check.ok else ""
    packer = msgpack.Packer(use_bin_type=True)
    return bytes(packer.pack(["PONG", check.ok, check.reason, server_hostname, digest]))


def check_pong(value: Any, salt: bytes, nonce: bytes, shared_key: str) -> None:
    """Raise unless the server accepted us and proved it knows the key."""
    if not (isinstance(value, list) and len(value) == 5 and value[0] == "PONG"):
        raise ForwardProtocolError("expected PONG")
    _, ok, reason, hostname, digest = value
    if ok is not True:
        raise ForwardProtocolError(f"authentication refused: {reason}")
    if not isinstance(hostname, str) or digest != _digest(salt, hostname, nonce, shared_key):
        raise ForwardProtocolError("the server's shared key digest does not match")
