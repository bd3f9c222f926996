"""The adaptive concurrency limit (``P_MAX_REQUESTS=adaptive``), sans-IO: samples in, a limit
out, time from an injected clock.

The algorithm is Envoy's adaptive-concurrency filter (its gradient controller) with the
gradient clamped as in Netflix's Gradient2, chosen so that the limit settles just above an
upstream's real capacity instead of far above it:

- **Minimum RTT.** At start and then every ``min_rtt_interval`` (60 s, plus up to 15% random
  jitter so replicas do not measure together) the limit is pinned to ``min_limit`` until
  ``min_rtt_samples`` (25) attempts have answered; their median is the idle latency
  ``min_rtt``. A later interval's median below it lowers it at once (the upstream got
  faster).
- **Sampled latency.** Every ``update_interval`` (100 ms) the median latency of the attempts
  answered in that interval is ``sample_rtt``.
- **Update.** ``gradient = clamp(min_rtt * (1 + tolerance) / sample_rtt, 0.5, 1.0)`` with a 10%
  tolerance for noise, and ``limit = limit * gradient + headroom``, ``headroom = max(1, limit /
  10)``, bounded by ``min_limit`` and ``max_limit``.

Below the upstream's capacity ``C`` latency stays at ``min_rtt``: the gradient is 1 and the
limit grows by a tenth per interval. Above it the excess queues at the upstream and latency
grows as ``limit / C``, so the update becomes ``1.1 C + limit / 10``: the fixed point is
``limit = 1.22 C`` (with Envoy's 25% buffer and ``sqrt(limit)`` headroom it would be about
1.5 C), and when the upstream speeds up or gains capacity the limit climbs again at a tenth
per interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sidecars.policies.window import Clock

TOLERANCE = 0.1
MIN_GRADIENT = 0.5


@dataclass(frozen=True, slots=True)
class AdaptiveSettings:
    min_limit: int = 3
    max_limit: int = 1000
    update_interval: float = 0.1
    min_rtt_interval: float = 60.0
    min_rtt_jitter: float = 0.15
    min_rtt_samples: int = 25


def _median(values: list[float]) -> float:
    values.sort()
    return values[len(values) // 2]


class AdaptiveLimit:
    """The current ``limit`` (an int), moved by ``sample(rtt)`` calls; ``random()`` in [0, 1)
    draws the jitter of the minimum-RTT re-measurement."""

    def __init__(
        self,
        settings: AdaptiveSettings,
        *,
        clock: Clock,
        random: Callable[[], float],
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._random = random
        self.on_change = on_change  # (old, new) whenever the limit moves
        self._estimate = float(settings.min_limit)
        self.limit = settings.min_limit
        self.min_rtt: float | None = None
        self.sample_rtt: float | None = None
        self.measuring = True  # pinned to min_limit while the idle latency is measured
        self._samples: list[float] = []
        self._next_update = clock() + settings.update_interval
        self._next_min_rtt = 0.0
        self.updates = 0

    def sample(self, rtt: float) -> None:
        """An attempt answered after ``rtt`` seconds."""
        samples = self._samples
        samples.append(rtt)
        if self.measuring:
            if len(samples) >= self.settings.min_rtt_samples:
                self._measured(_median(samples))
            return
        now = self._clock()
        if now >= self._next_update:
            self._update(now)

    def _measured(self, min_rtt: float) -> None:
        settings = self.settings
        self.min_rtt = min_rtt
        self.measuring = False
        self._samples = []
        now = self._clock()
        self._next_update = now + settings.update_interval
        jitter = 1.0 + settings.min_rtt_jitter * self._random()
        self._next_min_rtt = now + settings.min_rtt_interval * jitter
        self._set(self._estimate)

    def _update(self, now: float) -> None:
        settings = self.settings
        sample_rtt = self.sample_rtt = _median(self._samples)
        self._samples = []
        self._next_update = now + settings.update_interval
        if now >= self._next_min_rtt:
            self.measuring = True  # re-measure the idle latency at the lowest limit
            self._set_limit(settings.min_limit)
            return
        min_rtt = self.min_rtt
        assert min_rtt is not None
        if sample_rtt < min_rtt:
            min_rtt = self.min_rtt = sample_rtt
        gradient = min(1.0, max(MIN_GRADIENT, min_rtt * (1.0 + TOLERANCE) / sample_rtt))
        estimate = self._estimate
        self.updates += 1
        self._set(estimate * gradient + max(1.0, estimate / 10.0))

    def _set(self, estimate: float) -> None:
        settings = self.settings
        self._estimate = min(float(settings.max_limit), max(float(settings.min_limit), estimate))
        self._set_limit(int(self._estimate))

    def _set_limit(self, limit: int) -> None:
        old = self.limit
        self.limit = limit
        if limit != old and self.on_change is not None:
            self.on_change(old, limit)

    def snapshot(self) -> dict[str, object]:
        return {
            "limit": self.limit,
            "measuring_min_rtt": self.measuring,
            "min_rtt_seconds": self.min_rtt,
            "sample_rtt_seconds": self.sample_rtt,
            "updates": self.updates,
            "min_limit": self.settings.min_limit,
            "max_limit": self.settings.max_limit,
        }
