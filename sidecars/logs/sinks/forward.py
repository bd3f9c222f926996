"""The ``forward://host:port`` output: at-least-once delivery to a Fluentd Forward server.

Each batch goes as one PackedForward request with a ``chunk`` id, and stays in the buffer
until the server answers ``{"ack": chunk}``: a lost connection, a refused one or a missing ack
fails the batch and the delivery loop sends it again (with backoff), so a collector that is down
or restarting loses nothing; it may receive a batch twice. fluent-logger's ``FluentSender``
cannot do this (it sends without ``chunk`` and never reads an answer), hence this sender; it
reuses fluent-logger's ``EventTime`` through ``forward_protocol``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import orjson

from sidecars.logs.buffer import Batch
from sidecars.logs.forward_protocol import (
    ForwardProtocolError,
    check_pong,
    decode_helo,
    encode_packed_forward,
    encode_ping,
    is_ack_for,
    new_chunk_id,
    new_unpacker,
    rfc3339_to_event_time,
)
from sidecars.observability import LOG_RECORDS_DROPPED, get_logger

TAG = "sidecars.logs"
CONNECT_TIMEOUT = 5.0
ACK_TIMEOUT = 60.0
log = get_logger("sidecars.logs.forward_output")


class ForwardSink:
    max_batch_bytes = 1024 * 1024

    def __init__(self, name: str, host: str, port: int, shared_key: str | None) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.shared_key = shared_key
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._unpacker = new_unpacker()
        self.connected_since: float | None = None
        self.chunks_acked = 0

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT
        )
        self._reader, self._writer = reader, writer
        self._unpacker = new_unpacker()
        if self.shared_key is not None:
            await asyncio.wait_for(self._handshake(self.shared_key), CONNECT_TIMEOUT)
        self.connected_since = time.time()
        log.info("forward_output_connected", output=self.name)
        return reader, writer

    async def _handshake(self, shared_key: str) -> None:
        assert self._writer is not None
        nonce = decode_helo(await self._next_value())
        ping, salt = encode_ping(socket.gethostname(), nonce, shared_key)
        self._writer.write(ping)
        await self._writer.drain()
        check_pong(await self._next_value(), salt, nonce, shared_key)

    async def _next_value(self) -> Any:
        assert self._reader is not None
        while True:
            for value in self._unpacker:
                return value
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            self._unpacker.feed(data)

    def _entries(self, batch: Batch) -> list[tuple[Any, Any]]:
        now = time.time()
        entries: list[tuple[Any, Any]] = []
        for line in batch.data.splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                LOG_RECORDS_DROPPED.labels("buffer_corrupt").inc()
                log.error("buffer_record_unreadable", output=self.name, bytes=len(line))
                continue
            timestamp = record.get("timestamp") if isinstance(record, dict) else None
            entries.append((rfc3339_to_event_time(timestamp, now), record))
        return entries

    async def write(self, batch: Batch) -> None:
        entries = self._entries(batch)
        if not entries:
            return
        chunk = new_chunk_id()
        request = encode_packed_forward(TAG, entries, chunk)
        try:
            if self._writer is None or self._writer.is_closing():
                await self._connect()
            assert self._writer is not None
            self._writer.write(request)
            await self._writer.drain()
            await asyncio.wait_for(self._wait_ack(chunk), ACK_TIMEOUT)
        except BaseException:
            self._disconnect()
            raise
        self.chunks_acked += 1

    async def _wait_ack(self, chunk: str) -> None:
        while True:
            value = await self._next_value()
            if is_ack_for(value, chunk):
                return
            if not isinstance(value, dict) or "ack" not in value:
                raise ForwardProtocolError(f"unexpected answer {str(value)[:100]}")

    def _disconnect(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self.connected_since = None

    async def close(self) -> None:
        self._disconnect()

    def status(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "connected": self._writer is not None,
            "chunks_acked": self.chunks_acked,
        }
