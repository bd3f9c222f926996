"""One delivery loop per output: read from its own buffer cursor, write, retry, commit.

A batch leaves the buffer for an output only after that output's ``write`` returned (for
forward: after the collector's ack). A failed write is retried after exponential backoff with
jitter (equal jitter: at least half of the exponential step, so retries never spin), without
bound: the buffer bound, not a retry limit, decides when inputs must slow down. An output
that knows better (``RetryLater``: a destination's ``Retry-After``, its own full-jitter
schedule) names the delay itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from sidecars.logs.buffer import RecordBuffer
from sidecars.logs.forward_protocol import ForwardProtocolError
from sidecars.logs.sinks import OutputClosed, RetryLater, Sink
from sidecars.observability import LOG_OUTPUT_ERRORS, LOG_RECORDS_OUT, get_logger

BACKOFF_BASE = 0.1
BACKOFF_MAX = 2.0
log = get_logger("sidecars.logs.delivery")


def backoff_delay(
    attempt: int,
    rand: Callable[[], float] = random.random,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_MAX,
) -> float:
    """Delay before retry ``attempt`` (0-based): equal jitter over ``min(cap, base * 2**n)``."""
    step = min(cap, base * 2.0**attempt)
    return step / 2 + rand() * step / 2


class OutputDelivery:
    def __init__(
        self, sink: Sink, buffer: RecordBuffer, rand: Callable[[], float] = random.random
    ) -> None:
        self.sink = sink
        self._buffer = buffer
        self._rand = rand
        self._records_out = LOG_RECORDS_OUT.labels(sink.name)
        self._errors = LOG_OUTPUT_ERRORS.labels(sink.name)
        self.state = "idle"
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    async def run(self) -> None:
        """Deliver until the buffer's input is closed and this output has caught up."""
        name = self.sink.name
        while (batch := await self._buffer.read(name, self.sink.max_batch_bytes)) is not None:
            attempt = 0
            while True:
                self.state = "delivering"
                try:
                    await self.sink.write(batch)
                    break
                except OutputClosed as error:
                    self._failed(error)
                    self.state = "closed"
                    raise
                except (OSError, TimeoutError, ForwardProtocolError) as error:
                    self._failed(error)
                    if isinstance(error, RetryLater):
                        delay = error.delay
                    else:
                        delay = backoff_delay(attempt, self._rand)
                    attempt += 1
                    self.state = "retrying"
                    log.warn(
                        "output_write_failed",
                        output=name,
                        error=self.last_error,
                        attempt=attempt,
                        retry_in=round(delay, 3),
                    )
                    await asyncio.sleep(delay)
            if attempt:
                log.info("output_recovered", output=name, attempts=attempt + 1)
            self._buffer.commit(name, batch)
            self._records_out.inc(batch.count)
            self.delivered += batch.count
            self.state = "idle"
        self.state = "done"

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        self._errors.inc()
        self.last_error = f"{type(error).__name__}: {error}"
        self.last_error_at = time.time()

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "delivered": self.delivered,
            "pending": self._buffer.pending(self.sink.name),
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            **self.sink.status(),
        }
