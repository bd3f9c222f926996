"""Passive outlier detection (sans-IO): the arithmetic of ejecting an endpoint that keeps
failing, and of bringing it back.

An endpoint is ejected after ``consecutive_failures`` failed calls in a row, for
``base_ejection x times_ejected`` seconds (the n-th ejection lasts n times the base), capped by
``max_ejection``. Never more than ``max_ejected_percent`` of a cluster's endpoints are ejected
at once: ``floor(endpoints x percent / 100)`` may be, so a cluster of one endpoint never ejects
it (the circuit breaker judges that case), and one of two or three ejects at most one at 50%.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutlierSettings:
    consecutive_failures: int  # 0: off
    base_ejection: float
    max_ejection: float
    max_ejected_percent: int


class OutlierRecord:
    """What detection keeps per endpoint."""

    __slots__ = ("consecutive_failures", "ejected_until", "times_ejected")

    def __init__(self) -> None:
        self.consecutive_failures = 0
        self.times_ejected = 0
        self.ejected_until = 0.0  # 0: not ejected


class OutlierDetector:
    def __init__(self, settings: OutlierSettings) -> None:
        self.settings = settings
        self.enabled = settings.consecutive_failures > 0

    def max_ejected(self, endpoints: int) -> int:
        return endpoints * self.settings.max_ejected_percent // 100

    def failed(self, record: OutlierRecord) -> bool:
        """A failed call; True when the run of failures reached the threshold (the caller then
        ejects, if ``may_eject`` allows)."""
        record.consecutive_failures += 1
        return self.enabled and record.consecutive_failures >= self.settings.consecutive_failures

    @staticmethod
    def succeeded(record: OutlierRecord) -> None:
        record.consecutive_failures = 0

    def may_eject(self, endpoints: int, ejected: int) -> bool:
        return ejected + 1 <= self.max_ejected(endpoints)

    def eject(self, record: OutlierRecord, now: float) -> float:
        """Eject now; returns the moment it ends."""
        record.times_ejected += 1
        record.consecutive_failures = 0
        settings = self.settings
        duration = min(settings.base_ejection * record.times_ejected, settings.max_ejection)
        record.ejected_until = now + duration
        return record.ejected_until

    @staticmethod
    def due_back(record: OutlierRecord, now: float) -> bool:
        return record.ejected_until != 0.0 and now >= record.ejected_until

    @staticmethod
    def returned(record: OutlierRecord) -> None:
        record.ejected_until = 0.0
