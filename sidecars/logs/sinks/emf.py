"""CloudWatch Embedded Metric Format records of the log-derived counts, once a minute.

With ``LOGADAPTER_EMF_NAMESPACE`` set, every ``INTERVAL`` the counts of the last interval
(``RecordMetrics``: records by service and level, access-log responses by service and status
class; only pairs that counted something) become EMF records, one per pair:

    {"_aws": {"Timestamp": 1795687200000, "CloudWatchMetrics": [{"Namespace": "shop",
      "Dimensions": [["service", "level"]], "Metrics": [{"Name": "LogRecords", "Unit": "Count"}]}]},
     "service": "checkout", "level": "error", "LogRecords": 12}

They go to one output of the user's choice (``LOGADAPTER_EMF_OUTPUT``), through a small
buffer and delivery loop of their own, so that they reach that output only and are retried
like any batch; a last report is made when the adapter stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from sidecars.logs.buffer import MemoryBuffer
from sidecars.logs.model import Record
from sidecars.logs.record_metrics import Key, RecordMetrics
from sidecars.logs.sinks import Sink
from sidecars.logs.sinks.delivery import OutputDelivery
from sidecars.observability import LOG_RECORDS_DROPPED, get_logger

INTERVAL = 60.0
BUFFER_MAX = 8 * 1024 * 1024
METRICS = (("level", "LogRecords"), ("status_class", "HttpResponses"))
log = get_logger("sidecars.logs.emf")


def emf_record(
    namespace: str, timestamp_ms: int, *, dimension: str, metric: str, key: Key, count: int
) -> Record:
    service, value = key
    return {
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["service", dimension]],
                    "Metrics": [{"Name": metric, "Unit": "Count"}],
                }
            ],
        },
        "service": service,
        dimension: value,
        metric: count,
    }


class EmfReporter:
    def __init__(
        self,
        namespace: str,
        sink: Sink,
        metrics: RecordMetrics,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.namespace = namespace
        self.sink = sink
        self.metrics = metrics
        self.interval = interval
        self._clock = clock
        self.buffer = MemoryBuffer([sink.name], BUFFER_MAX)
        self.delivery = OutputDelivery(sink, self.buffer)
        self._reported: dict[str, dict[Key, int]] = {"level": {}, "status_class": {}}
        self._tasks: list[asyncio.Task[None]] = []
        self.reports = 0
        self.records_written = 0

    def due_records(self) -> list[Record]:
        """EMF records of what was counted since the last call."""
        now_ms = int(self._clock() * 1000)
        totals = {"level": self.metrics.levels, "status_class": self.metrics.responses}
        records: list[Record] = []
        for dimension, metric in METRICS:
            reported = self._reported[dimension]
            for key, total in list(totals[dimension].items()):
                delta = total - reported.get(key, 0)
                if delta:
                    records.append(
                        emf_record(
                            self.namespace, now_ms, dimension=dimension, metric=metric, key=key,
                            count=delta,
                        )
                    )
                    reported[key] = total
        return records

    def report(self) -> None:
        records = self.due_records()
        self.reports += 1
        if not records:
            return
        if self.buffer.full:  # the output has been away for hours: keep the newest counts out
            LOG_RECORDS_DROPPED.labels("emf_buffer_full").inc(len(records))
            log.error("emf_records_dropped", output=self.sink.name, records=len(records))
            return
        for record in records:  # one chunk each: a batch never needs to be larger than one
            self.buffer.append([record])
        self.records_written += len(records)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.report()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.delivery.run(), name=f"output {self.sink.name}"),
            asyncio.create_task(self._tick(), name="emf-reporter"),
        ]

    async def stop(self, within: float) -> None:
        """A last report, delivered within ``within`` seconds (else counted as dropped)."""
        delivery, ticker = self._tasks
        ticker.cancel()
        self.report()
        self.buffer.close_input()
        done, _ = await asyncio.wait([delivery], timeout=within)
        if not done:
            delivery.cancel()
            LOG_RECORDS_DROPPED.labels("drain_timeout").inc(self.buffer.records)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await delivery
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        await self.sink.close()

    def status(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "output": self.sink.name,
            "interval": self.interval,
            "reports": self.reports,
            "records_written": self.records_written,
            "delivery": self.delivery.status(),
        }
