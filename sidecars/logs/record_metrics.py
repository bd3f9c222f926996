"""Log-derived metrics: records by service and level, access-log responses by service and
status class, counted as records enter the buffer.

Label values are bounded: at most ``MAX_SERVICES`` services get their own label (the first
seen), later ones are counted as ``other``; a level outside the schema's six and a status
outside 100-599 are ``other`` too. Counts are gathered per buffered batch and added to the
Prometheus counters once per label pair, and kept as totals for the EMF reporter.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter

from sidecars.logs.model import Record
from sidecars.observability import LOG_HTTP_RESPONSES, LOG_RECORDS_BY_LEVEL

MAX_SERVICES = 100
OTHER = "other"
LEVELS = frozenset({"trace", "debug", "info", "warn", "error", "fatal"})
STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

Key = tuple[str, str]


class RecordMetrics:
    def __init__(self, max_services: int = MAX_SERVICES) -> None:
        self.max_services = max_services
        self._services: set[str] = set()
        self.levels: dict[Key, int] = {}
        """Records since start by (service, level)."""
        self.responses: dict[Key, int] = {}
        """Access-log records since start by (service, status class)."""
        self._children: dict[tuple[Counter, Key], Counter] = {}

    def _service(self, value: object) -> str:
        service = value if isinstance(value, str) else "unknown"
        if service in self._services:
            return service
        if len(self._services) < self.max_services:
            self._services.add(service)
            return service
        return OTHER

    def count(self, records: Sequence[Record]) -> None:
        levels: dict[Key, int] = {}
        responses: dict[Key, int] = {}
        for record in records:
            service = self._service(record.get("service"))
            level = record.get("level")
            key = (service, level if level in LEVELS else OTHER)
            levels[key] = levels.get(key, 0) + 1
            http = record.get("http")
            if isinstance(http, dict):
                status = http.get("status")
                status_class = (
                    STATUS_CLASSES.get(status // 100, OTHER) if isinstance(status, int) else OTHER
                )
                pair = (service, status_class)
                responses[pair] = responses.get(pair, 0) + 1
        self._publish(LOG_RECORDS_BY_LEVEL, levels, self.levels)
        self._publish(LOG_HTTP_RESPONSES, responses, self.responses)

    def _publish(self, metric: Counter, counts: dict[Key, int], totals: dict[Key, int]) -> None:
        for key, count in counts.items():
            child = self._children.get((metric, key))
            if child is None:
                child = self._children[(metric, key)] = metric.labels(*key)
            child.inc(count)
            totals[key] = totals.get(key, 0) + count
