"""The P_CANARY_* settings: defaults, forms, problems reported together, per route."""

import pytest

from sidecars import settings
from sidecars.settings import ConfigError, ProxySettings


def load(env: dict[str, str]) -> ProxySettings:
    loaded = settings.load("breaker", {"BREAKER_UPSTREAM": "http://stable:8080", **env})
    assert isinstance(loaded, ProxySettings)
    return loaded


def test_no_canary_without_its_upstream() -> None:
    (route,) = load({"BREAKER_CANARY_WEIGHT": "10"}).routes
    assert route.canary is None


def test_defaults_follow_the_contract() -> None:
    urls = "http://canary-a:8080,http://canary-b:8080"
    (route,) = load({"BREAKER_CANARY_UPSTREAM": urls}).routes
    canary = route.canary
    assert canary is not None
    assert len(canary.upstream.urls) == 2
    assert (canary.weight, canary.steps, canary.interval) == (0, (), 60.0)
    assert (canary.min_requests, canary.max_failure_ratio, canary.header) == (100, 0.05, None)


def test_forms() -> None:
    (route,) = load(
        {
            "BREAKER_CANARY_UPSTREAM": "http://canary:8080",
            "BREAKER_CANARY_WEIGHT": "100",
            "BREAKER_CANARY_STEPS": "5, 25,50,100",
            "BREAKER_CANARY_INTERVAL": "1m",
            "BREAKER_CANARY_MIN_REQUESTS": "1",
            "BREAKER_CANARY_MAX_FAILURE_RATIO": "0",
            "BREAKER_CANARY_HEADER": " X-Version ",
        }
    ).routes
    canary = route.canary
    assert canary is not None
    assert (canary.weight, canary.steps, canary.interval) == (100, (5, 25, 50, 100), 60.0)
    assert (canary.min_requests, canary.max_failure_ratio, canary.header) == (1, 0.0, "x-version")


def test_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load(
            {
                "BREAKER_CANARY_UPSTREAM": "ftp://canary",
                "BREAKER_CANARY_WEIGHT": "101",
                "BREAKER_CANARY_STEPS": "50,25",
                "BREAKER_CANARY_INTERVAL": "0s",
                "BREAKER_CANARY_MIN_REQUESTS": "0",
                "BREAKER_CANARY_MAX_FAILURE_RATIO": "1.5",
            }
        )
    joined = "\n".join(caught.value.problems)
    for name in ("UPSTREAM", "WEIGHT", "STEPS", "INTERVAL", "MIN_REQUESTS", "MAX_FAILURE_RATIO"):
        assert f"BREAKER_CANARY_{name}" in joined
    assert "rising weights from 1 to 100" in joined


@pytest.mark.parametrize("steps", ["0,50", "10,10", "50,25", "10,150", "a,b", ","])
def test_steps_must_rise_from_1_to_100(steps: str) -> None:
    with pytest.raises(ValueError, match="rising weights"):
        settings.canary_steps(steps)


def test_empty_steps_mean_a_fixed_weight() -> None:
    (route,) = load({"BREAKER_CANARY_UPSTREAM": "http://c:1", "BREAKER_CANARY_STEPS": ""}).routes
    assert route.canary is not None and route.canary.steps == ()


def test_a_tcp_route_has_no_canary() -> None:
    with pytest.raises(ConfigError) as caught:
        settings.load(
            "breaker",
            {
                "BREAKER_UPSTREAM": "tcp://db:5432",
                "BREAKER_PROTOCOL": "tcp",
                "BREAKER_CANARY_UPSTREAM": "tcp://db2:5432",
            },
        )
    assert "canary routing is for HTTP routes" in "\n".join(caught.value.problems)


def test_each_route_has_its_own_canary() -> None:
    loaded = load(
        {
            "BREAKER_ROUTES": "pay,search",
            "BREAKER_ROUTE_PAY_UPSTREAM": "http://pay:80",
            "BREAKER_ROUTE_PAY_LISTEN": "127.0.0.1:16001",
            "BREAKER_ROUTE_PAY_CANARY_UPSTREAM": "http://pay-v2:80",
            "BREAKER_ROUTE_PAY_CANARY_WEIGHT": "10",
            "BREAKER_ROUTE_SEARCH_UPSTREAM": "http://search:80",
            "BREAKER_ROUTE_SEARCH_LISTEN": "127.0.0.1:16002",
        }
    )
    canaries = {route.name: route.canary for route in loaded.routes}
    pay = canaries["pay"]
    assert pay is not None and pay.weight == 10 and pay.upstream.host == "pay-v2"
    assert canaries["search"] is None
