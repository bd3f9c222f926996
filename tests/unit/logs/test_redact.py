"""Redaction rules, their triggers, structured keys, counts, and the setting's syntax."""

from __future__ import annotations

from typing import Any

import pytest

from sidecars.envparse import ConfigError
from sidecars.logs.cards import is_card_number, luhn_valid
from sidecars.logs.redact import Redactor, check_spec, split_spec
from sidecars.settings import load_log_adapter


def redact(text: str, spec: str = "default") -> tuple[str, dict[str, int]]:
    redactor = Redactor.from_spec(spec)
    assert redactor is not None
    masked = redactor.redact_text(text, redactor.scan(text))
    return masked, redactor.counts


@pytest.mark.parametrize(
    ("text", "masked", "rule"),
    [
        ("Authorization: Bearer abcdef0123456789.xyz", "Authorization: Bearer [REDACTED:bearer]",
         "bearer"),
        ("header BEARER abcdefghijklmnop", "header BEARER [REDACTED:bearer]", "bearer"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl ok", "jwt [REDACTED:jwt] ok",
         "jwt"),
        ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED:aws_access_key] used",
         "aws_access_key"),
        ("temporary ASIAY34FZKBOKMUTVV7A", "temporary [REDACTED:aws_access_key]",
         "aws_access_key"),
        ("AWS_SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
         "AWS_SECRET_ACCESS_KEY: [REDACTED:aws_secret_key]", "aws_secret_key"),
        ("redis://:s3cret@cache:6379/0", "redis://:[REDACTED:url_password]@cache:6379/0",
         "url_password"),
        ("https://user:p%40ss@example.com/x", "https://user:[REDACTED:url_password]@example.com/x",
         "url_password"),
        ("password=hunter2 user=bob", "password=[REDACTED:secret_field] user=bob",
         "secret_field"),
        ("DB_PASSWD='a b c' next", "DB_PASSWD='[REDACTED:secret_field]' next", "secret_field"),
        ('{"client_secret": "abc\\"def"}', '{"client_secret": "[REDACTED:secret_field]"}',
         "secret_field"),
        ("?x=1&refresh_token=abc.def&y=2", "?x=1&refresh_token=[REDACTED:secret_field]&y=2",
         "secret_field"),
        ("api_key: AbC123", "api_key: [REDACTED:secret_field]", "secret_field"),
        ("card 4111 1111 1111 1111 ok", "card [REDACTED:credit_card] ok", "credit_card"),
        ("card 5555-5555-5555-4444.", "card [REDACTED:credit_card].", "credit_card"),
        ("amex 378282246310005", "amex [REDACTED:credit_card]", "credit_card"),
        ("visa 4222222222222", "visa [REDACTED:credit_card]", "credit_card"),
        ("Karte 4111 1111 1111 1111 für 5 €", "Karte [REDACTED:credit_card] für 5 €",
         "credit_card"),  # not ASCII
        ("nutzer=jürgen passwort=x password=geheim", "nutzer=jürgen passwort=x "
         "password=[REDACTED:secret_field]", "secret_field"),  # not ASCII: the regex path
        ("PRIVATE-KEY: def", "PRIVATE-KEY: [REDACTED:secret_field]", "secret_field"),
    ],
)
def test_default_rules(text: str, masked: str, rule: str) -> None:
    assert redact(text) == (masked, {rule: 1})


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112 fails Luhn",
        "epoch 1795687200123 and 1795687200123456789 are timestamps",
        "2026-11-26 10:00:00,123 a Python timestamp",
        "id 123e4567-e89b-12d3-a456-426614174000",
        "tokens_used=42 keyboard=us monkey=business passes=3",
        "mail bob@example.com and see https://example.com/a@b",
        "bearer of good news",  # too short to be a token
        "the key is on the table",
        "took 0.4111111111111111 s, ratio 1.5555555555554444",  # fractions, not cards
        "id 94111111111111111 is longer than a card",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == (text, {})


def test_nothing_triggers_on_a_clean_line() -> None:
    redactor = Redactor.from_spec("default")
    assert redactor is not None
    assert redactor.scan('{"level":"info","msg":"ok","status":200}', {"status": 200}) == 0


def test_structured_secret_keys_are_masked_whole() -> None:
    redactor = Redactor.from_spec("default")
    assert redactor is not None
    record: dict[str, Any] = {
        "message": "login",
        "attributes": {
            "password": "hunter2", "Authorization": "Basic dXNlcjpwYXNz", "retries": 3,
            "nested": {"apiKey": 12345, "ok": "fine", "items": [{"token": "t"}, "free text"]},
            "card": 4111111111111111, "flag": True,
        },
    }
    rules = redactor.scan('{"password":...,"apiKey":...,"token":..., 4111111111111111}')
    redactor.redact(record, rules)
    assert record["attributes"] == {
        "password": "[REDACTED:secret_field]",
        "Authorization": "[REDACTED:secret_field]",
        "retries": 3,
        "nested": {"apiKey": "[REDACTED:secret_field]", "ok": "fine",
                   "items": [{"token": "[REDACTED:secret_field]"}, "free text"]},
        "card": "[REDACTED:credit_card]",
        "flag": True,
    }
    assert redactor.counts == {"secret_field": 4, "credit_card": 1}


def test_json_top_level_secret_keys_are_found_by_name() -> None:
    redactor = Redactor.from_spec("default")
    assert redactor is not None
    assert redactor.scan('{"msg":"x","user_password":"p"}', {"user_password": "p"}) != 0
    assert redactor.secret_keys({"user_password": "p"})
    assert not redactor.secret_keys({"user": "p", "tokens": 3})


def test_error_and_http_fields_are_redacted_too() -> None:
    redactor = Redactor.from_spec("default")
    assert redactor is not None
    record = {
        "message": "failed",
        "error": {"message": "auth password=x", "stack_trace": "at f(token=abc) g()"},
        "http": {"path": "/a?token=abc", "referer": "https://u:pw@h/"},
    }
    redactor.redact(
        record, redactor.scan("auth password=x at f(token=abc) g() /a?token=abc https://u:pw@h/")
    )
    assert record["error"] == {
        "message": "auth password=[REDACTED:secret_field]",
        # An unquoted value ends at a space, comma, semicolon, & or bracket: masking a ")"
        # too is the safe side (a password may contain one).
        "stack_trace": "at f(token=[REDACTED:secret_field] g()",
    }
    assert record["http"] == {
        "path": "/a?token=[REDACTED:secret_field]",
        "referer": "https://u:[REDACTED:url_password]@h/",
    }


def test_every_secret_is_counted() -> None:
    masked, counts = redact("SECRET_KEY=abc secret_key=abc private_key='x y' token: 1")
    assert masked == (
        "SECRET_KEY=[REDACTED:secret_field] secret_key=[REDACTED:secret_field] "
        "private_key='[REDACTED:secret_field]' token: [REDACTED:secret_field]"
    )
    assert counts == {"secret_field": 4}


def test_a_secret_is_counted_once() -> None:
    masked, counts = redact("password=eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.sig")
    assert masked == "password=[REDACTED:jwt]"
    assert counts == {"jwt": 1}


def test_custom_regexes_whole_match_or_secret_group() -> None:
    spec = r"default,EMP-\d{4\,6},(?i)x-internal-key: (?P<secret>\S+)"
    masked, counts = redact("EMP-12345 sent X-Internal-Key: zz9 and password=p", spec)
    assert masked == (
        "[REDACTED:custom_1] sent X-Internal-Key: [REDACTED:custom_2] and "
        "password=[REDACTED:secret_field]"
    )
    assert counts == {"custom_1": 1, "custom_2": 1, "secret_field": 1}


def test_custom_regexes_alone_leave_the_defaults_off() -> None:
    assert redact(r"EMP-\d+ password=p", r"EMP-\d+")[0] == r"EMP-\d+ password=p"
    assert redact("EMP-77 password=p", r"EMP-\d+") == (
        "[REDACTED:custom_1] password=p", {"custom_1": 1}
    )


def test_off_is_no_redactor() -> None:
    assert Redactor.from_spec("off") is None
    assert Redactor.from_spec(" OFF ") is None


@pytest.mark.parametrize(
    ("spec", "items"),
    [
        ("default", ["default"]),
        ("default, a+ ,b", ["default", "a+", "b"]),
        (r"x{1,3},[a,b],(c|d,e)", ["x{1,3}", "[a,b]", "(c|d,e)"]),
        (r"a\,b,c", ["a,b", "c"]),
        (r"\d+,c", [r"\d+", "c"]),
    ],
)
def test_spec_items(spec: str, items: list[str]) -> None:
    assert split_spec(spec) == items


@pytest.mark.parametrize("spec", ["default,(unclosed", "", " , "])
def test_bad_specs_are_value_errors(spec: str) -> None:
    with pytest.raises(ValueError):
        check_spec(spec)


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert is_card_number("4111-1111-1111-1111")
    assert not is_card_number("1111111111111117")  # Luhn-valid, but no card starts with 1
    assert not is_card_number("4111")


def test_the_settings_reject_a_bad_redact_setting() -> None:
    with pytest.raises(ConfigError) as raised:
        load_log_adapter({"LOGADAPTER_REDACT": "default,([bad"})
    [problem] = raised.value.problems
    assert problem.startswith("LOGADAPTER_REDACT='default,([bad' is invalid")
    assert load_log_adapter({"LOGADAPTER_REDACT": " default, x+ "}).redact == "default, x+"


def test_custom_and_default_rules_apply_together() -> None:
    masked, counts = redact("EMP-1 jwt eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.sig", r"default,EMP-\d")
    assert masked == "[REDACTED:custom_1] jwt [REDACTED:jwt]"
    assert counts == {"custom_1": 1, "jwt": 1}
