import pytest

from sidecars import envparse as p


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("0.25", 0.25), ("30", 30.0), ("250ms", 0.25), ("2s", 2.0), ("1m", 60.0), ("1h", 3600.0),
     (" 5s ", 5.0), (".5", 0.5)],
)
def test_duration_accepts_seconds_and_units(raw: str, seconds: float) -> None:
    assert p.duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["", "abc", "-1", "5 days", "1ms5", "s"])
def test_duration_rejects_garbage(raw: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        p.duration(raw)


def test_positive_duration_rejects_zero() -> None:
    with pytest.raises(ValueError, match="above zero"):
        p.positive_duration("0s")


@pytest.mark.parametrize(
    ("raw", "size"),
    [("1024", 1024), ("64KiB", 65536), ("1MiB", 1048576), ("2 mib", 2097152), ("1GiB", 1 << 30),
     ("10KB", 10000)],
)
def test_size(raw: str, size: int) -> None:
    assert p.size(raw) == size


@pytest.mark.parametrize("raw", ["", "1.5MiB", "-1", "MiB", "12 parsecs"])
def test_size_rejects_garbage(raw: str) -> None:
    with pytest.raises(ValueError, match="size"):
        p.size(raw)


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("On", True), ("1", True),
                                            ("yes", True), ("off", False), ("NO", False),
                                            ("0", False), ("false", False)])
def test_boolean(raw: str, value: bool) -> None:
    assert p.boolean(raw) is value


def test_boolean_rejects_other_words() -> None:
    with pytest.raises(ValueError, match="true/false"):
        p.boolean("maybe")


def test_status_set_lists_and_ranges() -> None:
    assert p.status_set("429,500-502") == frozenset({429, 500, 501, 502})
    with pytest.raises(ValueError):
        p.status_set("600")
    with pytest.raises(ValueError):
        p.status_set("502-500")
    with pytest.raises(ValueError):
        p.status_set("5xx-ish")


def test_host_port() -> None:
    assert p.host_port("127.0.0.1:15001") == p.HostPort("127.0.0.1", 15001)
    assert p.host_port(":9901") == p.HostPort("0.0.0.0", 9901)
    assert p.host_port("[::1]:80") == p.HostPort("::1", 80)
    assert str(p.HostPort("::1", 80)) == "[::1]:80"
    for bad in ("localhost", "host:99999", "host:http"):
        with pytest.raises(ValueError, match="host:port"):
            p.host_port(bad)


def test_mask_url_hides_only_the_password() -> None:
    assert p.mask_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert p.mask_url("redis://user:pw@r:1") == "redis://user:***@r:1"
    assert p.mask_url("redis://r:6379") == "redis://r:6379"


def test_reader_collects_every_problem() -> None:
    env = {"X_A": "nope", "X_B": "7", "X_TYPO": "1"}
    reader = p.EnvReader(env, "X_")
    assert reader.get("A", p.duration, 1.0) == 1.0
    assert reader.get("B", p.int_range(1, 5), 3) == 3
    assert reader.require("C", str, "e.g. c") is None
    reader.reject_unknown()
    assert reader.problems == [
        "X_A='nope' is invalid: expected a duration: seconds (0.25, 30) or a number with ms, "
        "s, m or h",
        "X_B='7' is invalid: expected a whole number from 1 to 5",
        "X_C is required: e.g. c",
        "X_TYPO is not a known setting (check the spelling)",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.025, "25ms"), (0.5, "500ms"), (2.0, "2s"), (1.5, "1.5s"), (60, "60s")]
)
def test_duration_text_reads_back_as_the_same_duration(seconds: float, text: str) -> None:
    assert p.duration_text(seconds) == text
    assert p.duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("size", "text"), [(65536, "64KiB"), (1024**2, "1MiB"), (1000, "1000"), (0, "0")]
)
def test_size_text_reads_back_as_the_same_size(size: int, text: str) -> None:
    assert p.size_text(size) == text
    assert p.size(text) == size


def test_an_unknown_variable_far_from_every_known_one_gets_no_suggestion() -> None:
    reader = p.EnvReader({"X_TIMOUT": "1", "X_COLOUR": "red"}, "X_")
    reader.get("TIMEOUT", p.duration, 1.0)
    reader.reject_unknown()
    assert reader.problems == [
        "X_COLOUR is not a known setting (check the spelling)",
        "X_TIMOUT is not a known setting: did you mean X_TIMEOUT?",
    ]
