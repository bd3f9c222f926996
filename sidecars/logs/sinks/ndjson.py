"""The ``http://`` / ``https://`` output: each batch POSTed as NDJSON (the buffer's JSON lines as
they are), gzip optional, for generic collectors (Vector's ``http`` source, Logstash, Loki
gateways). Retries and refusals as ``sidecars.logs.sinks.http_client`` decides them; a
batch refused as too large (413) is sent again in halves, down to single records."""

from __future__ import annotations

from typing import Any

from sidecars.logs.buffer import Batch
from sidecars.logs.sinks.http_client import PAYLOAD_TOO_LARGE, HttpPoster, HttpRejected
from sidecars.observability import LOG_RECORDS_DROPPED, get_logger

CONTENT_TYPE = "application/x-ndjson"
log = get_logger("sidecars.logs.http_output")


class NdjsonSink:
    max_batch_bytes = 1024 * 1024

    def __init__(
        self, name: str, headers: tuple[tuple[str, str], ...], *, gzip_body: bool
    ) -> None:
        self.name = name
        self._poster = HttpPoster(name, headers, gzip_body=gzip_body)

    async def write(self, batch: Batch) -> None:
        await self._send(batch.data, batch.count)

    async def _send(self, data: bytes, count: int) -> None:
        try:
            await self._poster.post(data, CONTENT_TYPE)
        except HttpRejected as error:
            if error.status == PAYLOAD_TOO_LARGE and count > 1:
                lines = data.splitlines(keepends=True)
                half = len(lines) // 2
                log.info("http_output_batch_halved", output=self.name, records=count)
                await self._send(b"".join(lines[:half]), half)
                await self._send(b"".join(lines[half:]), len(lines) - half)
                return
            LOG_RECORDS_DROPPED.labels("http_rejected").inc(count)
            log.error("http_output_rejected", output=self.name, records=count,
                      status=error.status, error=str(error))

    async def close(self) -> None:
        await self._poster.close()

    def status(self) -> dict[str, Any]:
        return self._poster.status()
