"""The ``forward`` input: a Fluentd Forward protocol v1 server (Docker's fluentd log driver,
FireLens, Fluent Bit, Fluentd, fluent-logger).

One ``ForwardConnection`` per TCP connection reads into a bounded streaming unpacker and hands
the events of every request read so far on as one batch (fluent-logger and Docker send one
event per request). A ``chunk`` option is acknowledged only once the
records are accepted by the buffer (fsynced for the disk buffer). While the buffer is full the
connection is not read, so TCP slows the sender down. Corrupt msgpack or a request that is not
a Forward message closes that connection only (counted, logged); a bad entry inside a request
(a record that is not a map, a bad time) costs that entry only: dropped, counted
(``logadapter_records_dropped_total{reason="bad_entry"}``), logged at most once a minute
(``forward_entries_dropped``), and the request's good entries are delivered and acknowledged.
UDP on the same port answers heartbeats; a TCP ``nil`` is a heartbeat too. With a shared key
the server sends HELO and requires a valid PING before any event, within ``handshake_timeout``
(``LOGADAPTER_FORWARD_HANDSHAKE_TIMEOUT``); with ``idle_timeout``
(``LOGADAPTER_FORWARD_IDLE_TIMEOUT``, off by default) a connection that sends nothing for
that long is closed. Either close is counted (``logadapter_input_errors_total{input=
"forward",kind="handshake_timeout"|"idle_timeout"}``, and ``closed`` in /status) and logged.

Lines held by the processor for multi-line joining (at most ``multiline_timeout``) are
acknowledged with the request that brought them: waiting for the next line would hold a
one-event-per-request client (Docker with ``fluentd-request-ack``) to one event per timeout.
When a connection closes, the streams that no other open connection feeds are emitted at once
rather than after that timeout (the sender is gone: a stopped container).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import time
from typing import Any, cast

import orjson
from msgpack import BufferFull

from sidecars.envparse import HostPort
from sidecars.logs import depth
from sidecars.logs.forward_protocol import (
    UDP_HEARTBEAT,
    ForwardMessage,
    ForwardProtocolError,
    Heartbeat,
    check_ping,
    decode_message,
    encode_ack,
    encode_helo,
    encode_pong,
    new_unpacker,
)
from sidecars.logs.model import LogLine
from sidecars.logs.pipeline import LineRun, Pipeline
from sidecars.observability import LOG_INPUT_ERRORS, LOG_RECORDS_DROPPED, get_logger
from sidecars.settings import UnixAddress

READ_BYTES = 64 * 1024
"""What one read hands on at most (its complete requests): a batch whose events and records
stay in the CPU caches while they are processed (256 KiB reads were measured 10% slower)."""
STREAM_BUFFER_BYTES = 256 * 1024
"""What the event loop may read ahead of the processor from one connection."""
SOCKET_MODE = 0o666
BAD_ENTRIES_LOG_EVERY = 60.0
"""Seconds between two ``forward_entries_dropped`` log events (each bad entry is counted)."""
log = get_logger("sidecars.logs.forward")


class AuthenticationFailed(Exception):
    pass


def _undecodable(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _needs_repair(value: Any) -> bool:
    if isinstance(value, str):
        return _undecodable(value)
    if isinstance(value, dict):
        return any(_needs_repair(key) or _needs_repair(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_needs_repair(item) for item in value)
    return False


def _repaired(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_repaired(key): _repaired(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_repaired(item) for item in value]
    return value


def repair_record(record: dict[str, Any]) -> dict[str, Any]:
    """Undecodable bytes (kept as surrogates by the unpacker) become U+FFFD, counted once per
    record; a clean record is returned as it is."""
    try:
        orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)  # C speed; refuses surrogates
        return record
    except (orjson.JSONEncodeError, TypeError):
        pass
    record = depth.bounded(record)  # too deep for orjson: cut before walking it here
    if not _needs_repair(record):
        return record
    LOG_INPUT_ERRORS.labels("forward", "invalid_utf8").inc()
    repaired: dict[str, Any] = _repaired(record)
    return repaired


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def event_to_line(
    tag: str, timestamp: float | None, record: dict[str, Any], received_at: float
) -> LogLine:
    """A Docker/FireLens record (a ``log`` string) is a text line of its container's stream,
    handed over whole in ``fields`` (the processor stitches ``partial_*`` parts and keeps other
    keys as attributes); any other record is a structured event. Nesting past
    ``depth.MAX_DEPTH`` is cut."""
    record = depth.bounded(repair_record(record))
    text = record.get("log")
    if isinstance(text, str):
        container_id = _optional_str(record.get("container_id"))
        source = _optional_str(record.get("source"))
        name = _optional_str(record.get("container_name"))
        return LogLine(
            text=text,
            received_at=received_at,
            input="forward",
            stream_key=f"forward:{container_id or tag}:{source or '-'}",
            stream=source,
            fields=record,
            container_id=container_id,
            container_name=name.lstrip("/") if name else None,
            tag=tag,
            timestamp=timestamp,
        )
    return LogLine(
        text="",
        received_at=received_at,
        input="forward",
        stream_key=f"forward:{tag}",
        fields=record,
        tag=tag,
        timestamp=timestamp,
    )


_RECORD_KEYS = frozenset({"log", "source", "container_id", "container_name"})
_PARTIAL_KEYS = frozenset({"partial_message", "partial_id", "partial_ordinal", "partial_last"})


def events_to_parts(
    messages: list[ForwardMessage], received_at: float
) -> list[list[LogLine] | LineRun]:
    """The events of these requests for the pipeline, in order. Docker/FireLens records
    without partial markers come in runs of one container stream (``LineRun``: the
    processor takes them without a LogLine each, as it would take their ``event_to_line``
    LogLines); every other event is a LogLine."""
    parts: list[list[LogLine] | LineRun] = []
    run: LineRun | None = None
    run_key: tuple[Any, ...] = ()
    singles: list[LogLine] | None = None
    texts: list[str] = []
    times: list[float | None] = []
    for message in messages:
        tag = message.tag
        clean = message.clean
        for stamp, raw in message.events:
            record = raw if clean else repair_record(raw)
            text = record.get("log")
            if record.keys() == _RECORD_KEYS:  # what Docker sends: no partial marks, no extra
                extra = None
            elif text.__class__ is not str or not _PARTIAL_KEYS.isdisjoint(record):
                text = None
            elif _RECORD_KEYS.issuperset(record):
                extra = None
            else:  # FireLens adds ecs_cluster and others
                extra = depth.bounded(
                    {key: value for key, value in record.items() if key not in _RECORD_KEYS}
                )
            if text.__class__ is not str:
                if singles is None:
                    singles = []
                    parts.append(singles)
                    run = None
                singles.append(event_to_line(tag, stamp, record, received_at))
                continue
            key = (
                tag, record.get("container_id"), record.get("container_name"),
                record.get("source"), extra,
            )
            if run is None or key != run_key:
                run, run_key, singles = _record_run(tag, record, extra, received_at), key, None
                parts.append(run)
                texts = run.texts
                times = run.times = []
            texts.append(text.rstrip("\n"))
            times.append(stamp)
    return parts


def _record_run(
    tag: str, record: dict[str, Any], extra: dict[str, Any] | None, received_at: float
) -> LineRun:
    """An empty run for the records of ``record``'s container stream: its LogLine is the one
    ``event_to_line`` and the processor would make of such a record, but its text."""
    container_id = record.get("container_id")
    source = record.get("source")
    name = record.get("container_name")
    like = LogLine(
        text="",
        received_at=received_at,
        input="forward",
        stream_key=f"forward:{_optional_str(container_id) or tag}:{_optional_str(source) or '-'}",
        stream=source if isinstance(source, str) else None,
        container_id=container_id if isinstance(container_id, str) else None,
        container_name=name.lstrip("/") if isinstance(name, str) and name else None,
        tag=tag,
    )
    return LineRun([], like, extra=extra, unwrap=False)


class _HeartbeatResponder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.heartbeats = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.heartbeats += 1
        if self.transport is not None:
            self.transport.sendto(UDP_HEARTBEAT, addr)


class ForwardConnection:
    """One client connection: handshake (optional), then requests until EOF or an error."""

    def __init__(
        self, source: ForwardSource, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._source = source
        self._reader = reader
        self._writer = writer
        self._unpacker = new_unpacker()
        self.peer = str(writer.get_extra_info("peername"))
        self.idle = True
        self.stream_keys: set[str] = set()
        """The streams this connection fed (``ForwardSource.ingest``)."""

    async def run(self) -> None:
        source = self._source
        try:
            if source.shared_key is not None:
                try:
                    async with asyncio.timeout(source.handshake_timeout):
                        await self._handshake(source.shared_key)
                except TimeoutError:
                    self._fail(
                        "handshake_timeout", f"no valid PING within {source.handshake_timeout}s"
                    )
                    return
            while not source.stopping:
                self.idle = True
                try:
                    async with asyncio.timeout(source.idle_timeout):
                        data = await self._reader.read(READ_BYTES)
                except TimeoutError:
                    self._fail("idle_timeout", f"nothing sent for {source.idle_timeout}s")
                    return
                self.idle = False
                if not data:
                    return
                self._unpacker.feed(data)
                messages, error = self._decode_available()
                if messages:
                    await self._handle(messages)
                if error is not None:
                    raise error
        except BufferFull:
            self._fail("message_too_large", "a request is larger than the limit")
        except ForwardProtocolError as error:
            self._fail("bad_message", str(error))
        except ValueError as error:
            self._fail("corrupt_msgpack", str(error) or type(error).__name__)
        except AuthenticationFailed as error:
            self._fail("auth_failed", str(error))
        except (ConnectionError, asyncio.IncompleteReadError):
            log.debug("forward_connection_lost", peer=self.peer)
        except OSError as error:  # the disk buffer failed: no ack, the client sends again
            log.error("forward_request_not_stored", peer=self.peer, error=str(error))
        except Exception as error:  # a bug costs this connection, not the input
            LOG_INPUT_ERRORS.labels("forward", "internal_error").inc()
            log.error("forward_connection_failed", peer=self.peer, error=repr(error)[:200],
                      exc_info=error)
        finally:
            self._writer.close()

    def close(self) -> None:
        self._writer.close()

    def _fail(self, kind: str, detail: str) -> None:
        LOG_INPUT_ERRORS.labels("forward", kind).inc()
        self._source.closed[kind] = self._source.closed.get(kind, 0) + 1
        log.warn("forward_connection_closed", peer=self.peer, kind=kind, detail=detail[:200])

    async def _next_value(self) -> Any:
        while True:
            for value in self._unpacker:
                return value
            data = await self._reader.read(READ_BYTES)
            if not data:
                raise ConnectionResetError("closed during handshake")
            self._unpacker.feed(data)

    async def _handshake(self, shared_key: str) -> None:
        nonce = os.urandom(16)
        self._writer.write(encode_helo(nonce))
        await self._writer.drain()
        try:
            check = check_ping(await self._next_value(), nonce, shared_key)
        except ForwardProtocolError as error:
            raise AuthenticationFailed(str(error)) from None
        self._writer.write(encode_pong(check, self._source.hostname, nonce, shared_key))
        await self._writer.drain()
        if not check.ok:
            raise AuthenticationFailed(check.reason)

    def _decode_available(self) -> tuple[list[ForwardMessage], Exception | None]:
        """Every complete request read so far, and the error that stopped decoding, if any
        (requests before a corrupt one are still kept and acknowledged)."""
        messages: list[ForwardMessage] = []
        try:
            for value in self._unpacker:
                message = decode_message(value)
                if not isinstance(message, Heartbeat):
                    messages.append(message)
        except (ValueError, BufferFull) as error:
            return messages, error
        return messages, None

    async def _handle(self, messages: list[ForwardMessage]) -> None:
        """One batch for the processor (clients like fluent-logger send one event per
        request), then the acks of the requests that asked for one."""
        self._source.count_bad_entries(messages, self.peer)
        position = await self._source.ingest(messages, self.stream_keys)
        chunks = [message.chunk for message in messages if message.chunk is not None]
        if chunks:
            await self._source.pipeline.buffer.wait_accepted(position)
            self._writer.write(b"".join(encode_ack(chunk) for chunk in chunks))
            await self._writer.drain()


class ForwardSource:
    name = "forward"

    def __init__(
        self,
        listen: HostPort | UnixAddress,
        shared_key: str | None,
        pipeline: Pipeline,
        *,
        handshake_timeout: float = 10.0,
        idle_timeout: float | None = None,
    ) -> None:
        self.listen = listen
        self.shared_key = shared_key
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.pipeline = pipeline
        self.hostname = socket.gethostname()
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._heartbeats: _HeartbeatResponder | None = None
        self._connections: dict[asyncio.Task[Any], ForwardConnection] = {}
        self._feeders: dict[str, int] = {}  # stream key -> live connections that fed it
        self.connections_total = 0
        self.requests = 0
        self.events = 0
        self.modes: dict[str, int] = {}
        self.closed: dict[str, int] = {}
        """Connections closed by the server, by reason (``ForwardConnection._fail``)."""
        self.bad_entries = 0
        self._bad_entries_logged_at: float | None = None

    async def start(self) -> None:
        if isinstance(self.listen, UnixAddress):
            await self._start_unix(self.listen.path)
            return
        self._server = await asyncio.start_server(
            self._serve,
            self.listen.host,
            self.listen.port,
            limit=STREAM_BUFFER_BYTES,
            reuse_address=True,
        )
        port = self._server.sockets[0].getsockname()[1]
        _, self._heartbeats = await asyncio.get_running_loop().create_datagram_endpoint(
            _HeartbeatResponder, local_addr=(self.listen.host, port)
        )
        log.info(
            "forward_listening",
            address=f"{self.listen.host}:{port}",
            shared_key=self.shared_key is not None,
        )

    async def _start_unix(self, path: str) -> None:
        """A Unix socket (FireLens: ``unix:///var/run/fluent.sock``). A socket file left by a
        previous run is removed first (anything else at that path is an error); the socket
        is made writable by everyone (0666), since the peer is Docker's log driver or another
        container's user. No UDP heartbeats: a Unix socket has no port."""
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
                log.info("forward_stale_socket_removed", path=path)
        self._server = await asyncio.start_unix_server(
            self._serve, path, limit=STREAM_BUFFER_BYTES
        )
        os.chmod(path, SOCKET_MODE)
        log.info(
            "forward_listening",
            address=f"unix://{path}",
            shared_key=self.shared_key is not None,
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection = ForwardConnection(self, reader, writer)
        self._connections[task] = connection
        self.connections_total += 1
        try:
            await connection.run()
        finally:
            self._flush_orphaned(connection.stream_keys)
            del self._connections[task]

    def _flush_orphaned(self, stream_keys: set[str]) -> None:
        """A connection is gone: the streams no other live connection feeds are emitted now,
        pending multi-line group and partial line included, instead of after the idle
        timeout (Docker's fluentd driver has one connection per container and closes it
        when the container stops: nothing more will continue them)."""
        orphaned = []
        for key in stream_keys:
            feeders = self._feeders[key] - 1
            if feeders:
                self._feeders[key] = feeders
            else:
                del self._feeders[key]
                orphaned.append(key)
        if orphaned:
            self.pipeline.flush_streams(orphaned)

    async def ingest(self, messages: list[ForwardMessage], fed: set[str]) -> int:
        """Process these requests of one connection; ``fed``: the stream keys it fed so far
        (updated)."""
        now = time.time()
        parts = events_to_parts(messages, now)
        for part in parts:
            if isinstance(part, LineRun):
                keys = [part.like.stream_key]
            else:
                keys = [line.stream_key for line in part]
            for key in keys:
                if key not in fed:
                    fed.add(key)
                    self._feeders[key] = self._feeders.get(key, 0) + 1
        for message in messages:
            self.modes[message.mode] = self.modes.get(message.mode, 0) + 1
            self.events += len(message.events)
        self.requests += len(messages)
        return await self.pipeline.ingest_parts(parts, self.name)

    def count_bad_entries(self, messages: list[ForwardMessage], peer: str) -> None:
        """The entries these requests dropped as bad: counted, logged at most once a minute."""
        dropped = 0
        for message in messages:
            if message.dropped:
                dropped += message.dropped
                bad = message
        if not dropped:
            return
        LOG_RECORDS_DROPPED.labels("bad_entry").inc(dropped)
        self.bad_entries += dropped
        now = time.monotonic()
        last = self._bad_entries_logged_at
        if last is None or now - last >= BAD_ENTRIES_LOG_EVERY:
            self._bad_entries_logged_at = now
            log.warning(
                "forward_entries_dropped", peer=peer, tag=bad.tag, mode=bad.mode,
                count=dropped, total=self.bad_entries, detail=bad.dropped_detail[:200],
            )

    async def stop(self) -> None:
        """Stop accepting; idle connections close, busy ones finish (and ack) their request."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self._heartbeats is not None and self._heartbeats.transport is not None:
            self._heartbeats.transport.close()
        for connection in list(self._connections.values()):
            if connection.idle:
                # Closing, not cancelling, its task: the read ends with EOF. (Python 3.11's
                # StreamReaderProtocol logs "Exception in callback" for a cancelled one.)
                connection.close()
        tasks = list(self._connections)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if isinstance(self.listen, UnixAddress):
            with contextlib.suppress(OSError):
                os.unlink(self.listen.path)

    def status(self) -> dict[str, Any]:
        return {
            "listen": str(self.listen),
            "connections": len(self._connections),
            "connections_total": self.connections_total,
            "requests": self.requests,
            "events": self.events,
            "modes": dict(self.modes),
            "udp_heartbeats": self._heartbeats.heartbeats if self._heartbeats else 0,
            "shared_key": self.shared_key is not None,
            "handshake_timeout": self.handshake_timeout,
            "idle_timeout": self.idle_timeout,
            "closed": dict(self.closed),
            "bad_entries": self.bad_entries,
        }
