"""The overload-protection settings block: parsing, inheritance by routes, problems."""

from __future__ import annotations

import pytest

from sidecars.settings import ConfigError, RateLimit, load_proxy


def env(**settings: str) -> dict[str, str]:
    prefixed = {f"BREAKER_{key}": value for key, value in settings.items()}
    return {"BREAKER_UPSTREAM": "http://app:8080", **prefixed}


def test_defaults_are_off() -> None:
    overload = load_proxy("breaker", env()).routes[0].overload
    assert overload.max_requests is None and overload.rate_limit is None
    assert overload.max_pending == 0 and overload.queue_timeout == 1.0
    assert overload.max_connections is None and overload.max_active_retries is None


def test_values_parse() -> None:
    overload = load_proxy(
        "breaker",
        env(MAX_REQUESTS="Adaptive", RATE_LIMIT="6000/m", QUEUE_TIMEOUT="250ms", MAX_PENDING="7"),
    ).routes[0].overload
    assert overload.adaptive and overload.max_pending == 7 and overload.queue_timeout == 0.25
    assert overload.rate_limit == RateLimit(6000, 60.0) and overload.burst == 100
    assert load_proxy("breaker", env(MAX_REQUESTS="12")).routes[0].overload.max_requests == 12


def test_a_route_inherits_the_top_level_limits() -> None:
    settings = load_proxy(
        "breaker",
        env(
            MAX_REQUESTS="5",
            ROUTES="a",
            ROUTE_A_UPSTREAM="http://a:1",
            ROUTE_A_LISTEN="127.0.0.1:15099",
            ROUTE_A_RATE_LIMIT="10/s",
        ),
    )
    route = next(r for r in settings.routes if r.name == "a")
    assert route.overload.max_requests == 5 and route.overload.rate_limit == RateLimit(10, 1.0)


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"MAX_REQUESTS": "lots"}, "BREAKER_MAX_REQUESTS='lots' is invalid"),
        ({"RATE_LIMIT": "10/h"}, "BREAKER_RATE_LIMIT='10/h' is invalid: expected a rate"),
        ({"RATE_LIMIT_BURST": "5"}, "need BREAKER_RATE_LIMIT"),
        (
            {"MAX_REQUESTS": "adaptive", "ADAPTIVE_MIN_LIMIT": "10", "ADAPTIVE_MAX_LIMIT": "5"},
            "BREAKER_ADAPTIVE_MAX_LIMIT=5 is below BREAKER_ADAPTIVE_MIN_LIMIT=10",
        ),
    ],
)
def test_problems_are_reported(settings: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_proxy("breaker", env(**settings))
    assert problem in str(error.value)
