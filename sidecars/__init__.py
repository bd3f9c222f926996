"""Drop-in sidecars: circuit breaker, retry ambassador and log adapter."""

__version__ = "0.1.0"
