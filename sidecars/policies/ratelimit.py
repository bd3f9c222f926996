"""The local rate limit (``P_RATE_LIMIT``), sans-IO: a token bucket on an injected clock."""

from __future__ import annotations

from sidecars.policies.window import Clock


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take()`` is 0.0 when a request is admitted,
    else the seconds until a token is back (for ``Retry-After``)."""

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, *, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def set_rate(self, rate: float) -> None:
        self._refill()
        self.rate = rate

    def take(self) -> float:
        tokens = self._refill()
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        return (1.0 - tokens) / self.rate

    def _refill(self) -> float:
        now = self._clock()
        tokens = self._tokens + (now - self._stamp) * self.rate
        tokens = min(tokens, self.burst)
        self._tokens = tokens
        self._stamp = now
        return tokens

    @property
    def tokens(self) -> float:
        return self._refill()
