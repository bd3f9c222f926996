"""The processor's counters: kept in plain dicts while a batch is processed, then added to
the Prometheus metrics once per call (a few ``inc`` per batch, none per line), and kept as
totals for /status."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import Counter

from sidecars import observability
from sidecars.logs import depth

_LOG_EVERY = 60.0
_log = observability.get_logger("sidecars.logs.processor")


class ProcessingCounters:
    """Formats seen, redactions per rule, truncations per reason, multi-line groups."""

    def __init__(self, line_limit: int, group_limit: int) -> None:
        self.formats: defaultdict[str, int] = defaultdict(int)
        self.truncated: dict[str, int] = {}
        self.groups = 0
        self.errors = 0
        self.totals: dict[str, dict[str, int]] = {
            "formats": {},
            "redactions": {},
            "truncated": {},
            "multiline_groups": {"total": 0},
            "dropped": {"processor_error": 0},
        }
        self._limits = {
            "max_line_bytes": ("limit_bytes", line_limit),
            "multiline_max_bytes": ("limit_bytes", group_limit),
            "max_depth": ("limit_levels", depth.MAX_DEPTH),
        }
        self._logged: dict[str, float] = {}
        self._children: dict[tuple[Counter, str], Counter] = {}

    def publish(self, redactions: dict[str, int], now: float) -> None:
        """Add this call's counts to the metrics and totals; ``redactions`` (the redactor's
        counts) is emptied like the others."""
        totals = self.totals
        cuts = depth.take_cuts()
        if cuts:
            self.truncated["max_depth"] = self.truncated.get("max_depth", 0) + cuts
        if self.formats:
            self._add(observability.LOG_RECORDS_FORMAT, self.formats, totals["formats"])
        if redactions:
            self._add(observability.LOG_REDACTIONS, redactions, totals["redactions"])
        if self.truncated:
            for reason, count in self.truncated.items():
                self._log_rarely(reason, count, now)
            self._add(observability.LOG_TRUNCATED, self.truncated, totals["truncated"])
        if self.errors:
            observability.LOG_RECORDS_DROPPED.labels("processor_error").inc(self.errors)
            totals["dropped"]["processor_error"] += self.errors
            self.errors = 0
        if self.groups:
            observability.LOG_MULTILINE_GROUPS.inc(self.groups)
            totals["multiline_groups"]["total"] += self.groups
            self.groups = 0

    def _add(self, metric: Counter, counts: dict[str, int], totals: dict[str, int]) -> None:
        children = self._children
        for label, count in counts.items():
            child = children.get((metric, label))
            if child is None:  # ``labels()`` takes a lock and builds a key: once per label
                child = children[(metric, label)] = metric.labels(label)
            child.inc(count)
            totals[label] = totals.get(label, 0) + count
        counts.clear()

    def failed(self, error: Exception, now: float) -> None:
        """Making one record raised: that record is dropped, counted, and logged (with its
        traceback, at most once a minute)."""
        self.errors += 1
        last = self._logged.get("processor_error")
        if last is None or now - last >= _LOG_EVERY:
            self._logged["processor_error"] = now
            _log.error(
                "log_record_failed",
                error=f"{type(error).__name__}: {str(error)[:200]}",
                total=self.totals["dropped"]["processor_error"] + self.errors,
                exc_info=error,
            )

    def _log_rarely(self, reason: str, count: int, now: float) -> None:
        """Truncation is bad input: logged, but at most once a minute per reason."""
        last = self._logged.get(reason)
        if last is None or now - last >= _LOG_EVERY:
            self._logged[reason] = now
            limit_name, limit = self._limits.get(reason, ("limit", 0))
            _log.warning(
                "log_records_truncated",
                reason=reason,
                count=count,
                total=self.totals["truncated"].get(reason, 0) + count,
                **{limit_name: limit},
            )
