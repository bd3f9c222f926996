"""Fixtures for the canary tests: a real Redis (upstreams and proxies come from
../conftest.py)."""

from redis_parts import redis_server

__all__ = ["redis_server"]
