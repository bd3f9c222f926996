"""What the sidecars report about themselves: samples from their ``/metrics``.

The demo shows only numbers a user can read from a real deployment's admin ports: retries,
circuit transitions and rejections, records normalised per format.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

CIRCUIT_STATES = ("closed", "open", "half_open")


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True, slots=True)
class Scrape:
    """One ``/metrics`` page, parsed."""

    samples: tuple[Sample, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Scrape:
        return cls(
            tuple(
                Sample(sample.name, tuple(sorted(sample.labels.items())), float(sample.value))
                for family in text_string_to_metric_families(text)
                for sample in family.samples
            )
        )

    def total(self, name: str, **labels: str) -> float:
        """Sum of ``name``'s samples whose labels include ``labels``."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name and all((k, v) in sample.labels for k, v in labels.items())
        )

    def by_label(self, name: str, label: str) -> Counter[str]:
        counts: Counter[str] = Counter()
        for sample in self.samples:
            if sample.name == name:
                counts[dict(sample.labels).get(label, "")] += int(sample.value)
        return counts

    def circuit_state(self) -> str | None:
        for sample in self.samples:
            if sample.name == "sidecar_circuit_state" and sample.value == 1:
                return dict(sample.labels).get("state")
        return None

    def transitions(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for sample in self.samples:
            if sample.name == "sidecar_circuit_transitions_total":
                labels = dict(sample.labels)
                counts[(labels.get("from", "?"), labels.get("to", "?"))] += int(sample.value)
        return counts


async def scrape(session: aiohttp.ClientSession, admin_url: str) -> Scrape | None:
    """The sidecar's metrics now, or None when it does not answer (it is stopping)."""
    try:
        async with session.get(admin_url + "/metrics") as response:
            if response.status != 200:
                return None
            return Scrape.parse(await response.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


@dataclass
class CircuitWatch:
    """Turns growing transition counters into an ordered list of new transitions.

    Several transitions can land between two scrapes (open -> half_open -> open -> half_open
    -> closed): they are replayed as the walk from the last known state that uses every new
    transition once and ends in the state the gauge reports.
    """

    state: str = "closed"
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)

    def update(self, scrape: Scrape) -> list[tuple[str, str]]:
        now = scrape.transitions()
        grown = +Counter({edge: count - self.seen[edge] for edge, count in now.items()})
        self.seen = now
        current = scrape.circuit_state()
        ordered = replay(self.state, grown, current)
        if ordered is None:  # counters that no walk explains (e.g. a restarted sidecar)
            ordered = sorted(grown.elements())
        self.state = current or (ordered[-1][1] if ordered else self.state)
        return ordered


def replay(
    start: str, edges: Counter[tuple[str, str]], end: str | None
) -> list[tuple[str, str]] | None:
    """A walk from ``start`` using each edge as many times as counted, ending at ``end``."""
    remaining = Counter(edges)
    total = sum(remaining.values())
    path: list[tuple[str, str]] = []

    def walk(state: str) -> bool:
        if len(path) == total:
            return end is None or state == end
        for edge in sorted(e for e, n in remaining.items() if n > 0 and e[0] == state):
            remaining[edge] -= 1
            path.append(edge)
            if walk(edge[1]):
                return True
            path.pop()
            remaining[edge] += 1
        return False

    return path if walk(start) else None


def format_transitions(counts: Mapping[tuple[str, str], int]) -> str:
    order = {state: index for index, state in enumerate(CIRCUIT_STATES)}
    edges = sorted(counts, key=lambda edge: (order.get(edge[0], 9), order.get(edge[1], 9)))
    return ", ".join(f"{a}->{b} {counts[(a, b)]}" for a, b in edges if counts[(a, b)]) or "none"
