"""The ``syslog`` input: UDP and TCP on one port; framing only, parsing is the processor's
(messages go on with ``format_hint="syslog"``).

UDP: one datagram is one message. UDP cannot push back, so while the buffer is full datagrams
are dropped and counted (``logadapter_records_dropped_total{reason="buffer_full_udp"}``); it is
the only input that ever drops. TCP: RFC 6587 octet counting (``LEN SP MSG``) or newline
framing, chosen per connection from its first byte (octet counting starts with a digit, a
framed syslog message with ``<``); TCP is simply not read while the buffer is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

from sidecars.envparse import HostPort
from sidecars.logs.buffer import BufferWriteError
from sidecars.logs.model import LogLine
from sidecars.logs.pipeline import Pipeline
from sidecars.logs.sources.lines import LineSplitter, count_cut, cut_marker, decode, kept_bytes
from sidecars.observability import LOG_INPUT_ERRORS, LOG_RECORDS_DROPPED, get_logger

READ_BYTES = 256 * 1024
MAX_LENGTH_DIGITS = 10
_SEPARATORS = b"\r\n "
log = get_logger("sidecars.logs.syslog")


class SyslogFramingError(ValueError):
    pass


class SyslogFramer:
    """RFC 6587 framing of one TCP connection. Sans-IO: bytes in, messages out.

    A message is kept whole up to ``message_cap`` bytes (the processor cuts one over
    ``LOGADAPTER_MAX_LINE_BYTES`` into marked parts); past it, in either framing, its first
    ``message_cap`` bytes go on followed by ``lines.cut_marker``, and the rest is skipped.
    """

    def __init__(self, message_cap: int) -> None:
        self.message_cap = message_cap
        self.mode: str | None = None
        self._lines = LineSplitter(message_cap, "syslog")
        self._pending = b""
        self._skip = 0

    def feed(self, data: bytes) -> list[bytes]:
        if self.mode is None:
            first = data.lstrip(_SEPARATORS)[:1]
            if not first:
                return []
            self.mode = "octet_counting" if first.isdigit() else "newline"
        if self.mode == "newline":
            return [line for line in self._lines.split_raw(data) if line.strip(_SEPARATORS)]
        return self._octet_counted(data)

    def finish(self) -> bytes | None:
        """At the end of the connection: a newline-framed last message without its newline."""
        if self.mode != "newline":
            return None
        last = self._lines.finish()
        if last is None or not last[1].strip():
            return None
        return last[1].encode("utf-8", "surrogateescape")

    def _octet_counted(self, data: bytes) -> list[bytes]:
        buffer = self._pending + data if self._pending else data
        messages: list[bytes] = []
        at = 0
        while True:
            if self._skip:
                skipped = min(self._skip, len(buffer) - at)
                at += skipped
                self._skip -= skipped
                if self._skip:
                    break
            while at < len(buffer) and buffer[at] in _SEPARATORS:
                at += 1
            if at >= len(buffer):
                break
            space = buffer.find(b" ", at, at + MAX_LENGTH_DIGITS + 1)
            if space < 0:
                head = buffer[at : at + MAX_LENGTH_DIGITS + 1]
                if len(head) > MAX_LENGTH_DIGITS or not head.isdigit():
                    raise SyslogFramingError(f"expected 'LENGTH SP', got {head[:16]!r}")
                break
            head = buffer[at:space]
            if not head.isdigit() or head.startswith(b"0"):
                raise SyslogFramingError(f"bad octet count {head[:16]!r}")
            length = int(head)
            take = min(length, self.message_cap)
            if len(buffer) - (space + 1) < take:
                break
            message = buffer[space + 1 : space + 1 + take]
            if take < length:
                message = message[: kept_bytes(message, take)]
                dropped = length - len(message)
                count_cut("syslog", dropped, self.message_cap)
                message += cut_marker(dropped)
            messages.append(message)
            at = space + 1 + take
            self._skip = length - take
        self._pending = buffer[at:]
        return messages


def message_text(raw: bytes) -> str:
    return decode(raw, "syslog").rstrip("\r\n\x00")


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, source: SyslogSource) -> None:
        self._source = source
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._source.datagram(data, str(addr[0]))


class SyslogSource:
    name = "syslog"

    def __init__(self, listen: HostPort, pipeline: Pipeline, message_cap: int) -> None:
        self.listen = listen
        self._pipeline = pipeline
        self._message_cap = message_cap
        self._server: asyncio.Server | None = None
        self._udp: _Datagrams | None = None
        self._udp_lines: list[LogLine] = []
        self._connections: dict[asyncio.Task[Any], bool] = {}  # task -> idle
        self._stopping = False
        self.udp_messages = 0
        self.udp_dropped = 0
        self.tcp_messages = 0
        self.tcp_connections_total = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            self.listen.host,
            self.listen.port,
            limit=READ_BYTES,
            reuse_address=True,
        )
        port = self._server.sockets[0].getsockname()[1]
        _, self._udp = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=(self.listen.host, port)
        )
        log.info("syslog_listening", address=f"{self.listen.host}:{port}")

    # --- UDP ---------------------------------------------------------------------------------

    def datagram(self, data: bytes, host: str) -> None:
        if self._stopping:
            return
        if self._pipeline.full:
            self.udp_dropped += 1
            LOG_RECORDS_DROPPED.labels("buffer_full_udp").inc()
            return
        self.udp_messages += 1
        line = LogLine(
            message_text(data), time.time(), "syslog", f"syslog:{host}", format_hint="syslog"
        )
        if not self._udp_lines:
            # Datagrams arriving in one loop iteration are processed as one batch.
            asyncio.get_running_loop().call_soon(self._flush_datagrams)
        self._udp_lines.append(line)

    def _flush_datagrams(self) -> None:
        lines, self._udp_lines = self._udp_lines, []
        with contextlib.suppress(BufferWriteError):  # counted and logged by the pipeline
            self._pipeline.ingest_nowait(lines, self.name)

    # --- TCP ---------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tcp_connections_total += 1
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else "unknown"
        framer = SyslogFramer(self._message_cap)
        try:
            while not self._stopping:
                self._connections[task] = True
                data = await reader.read(READ_BYTES)
                self._connections[task] = False
                if data:
                    messages = framer.feed(data)
                else:
                    last = framer.finish()
                    messages = [] if last is None else [last]
                if messages:
                    now = time.time()
                    lines = [
                        LogLine(
                            message_text(raw), now, "syslog", f"syslog:{host}", format_hint="syslog"
                        )
                        for raw in messages
                    ]
                    self.tcp_messages += len(lines)
                    await self._pipeline.ingest(lines, self.name)
                if not data:
                    break
        except SyslogFramingError as error:
            LOG_INPUT_ERRORS.labels(self.name, "bad_frame").inc()
            log.warn(
                "syslog_connection_closed", peer=str(peer), kind="bad_frame", detail=str(error)
            )
        except ConnectionError:
            log.debug("syslog_connection_lost", peer=str(peer))
        except OSError as error:
            log.error("syslog_messages_not_stored", peer=str(peer), error=str(error))
        except Exception as error:  # a bug costs this connection, not the input
            LOG_INPUT_ERRORS.labels(self.name, "internal_error").inc()
            log.error(
                "syslog_connection_failed", peer=str(peer), error=repr(error)[:200], exc_info=error
            )
        finally:
            self._connections.pop(task, None)
            writer.close()

    # --- lifecycle ---------------------------------------------------------------------------

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        if self._udp_lines:
            self._flush_datagrams()
        for task, idle in list(self._connections.items()):
            if idle:
                task.cancel()
        tasks = list(self._connections)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {
            "listen": str(self.listen),
            "tcp_connections": len(self._connections),
            "tcp_connections_total": self.tcp_connections_total,
            "tcp_messages": self.tcp_messages,
            "udp_messages": self.udp_messages,
            "udp_dropped_buffer_full": self.udp_dropped,
        }
