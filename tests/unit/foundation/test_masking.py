"""Secrets in configuration values and the throttle of repeating log lines."""

from support import FakeClock

from sidecars import envparse as p
from sidecars.observability import LogThrottle


def test_mask_url_hides_passwords_and_secret_query_values() -> None:
    assert p.mask_url("http://user:pa@ss@host:1/x") == "http://user:***@host:1/x"
    assert p.mask_url("https://h/?access_token=t0k&page=2") == "https://h/?access_token=***&page=2"
    assert p.mask_url("https://h/?X-Amz-Signature=abc") == "https://h/?X-Amz-Signature=***"
    # In a list, too much is hidden rather than too little.
    assert p.mask_url("forward://a:1,http://u:pw@b:2") == "forward://a:***@b:2"
    assert p.mask_url("http://h/path@v2?q=1") == "http://h/path@v2?q=1"
    assert p.mask_url("not a url") == "not a url"


def test_a_log_throttle_lets_one_line_through_per_interval() -> None:
    clock = FakeClock()
    throttle = LogThrottle(10.0, clock)
    assert throttle.due() == 0
    assert throttle.due() is None
    clock.advance(5)
    assert throttle.due() is None
    clock.advance(5)
    assert throttle.due() == 2  # the two held back since the last line
    assert throttle.due() is None
