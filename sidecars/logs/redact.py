"""Masking secrets in records: ``[REDACTED:<rule>]`` in place of the secret, counted per rule.

``LOGADAPTER_REDACT`` is ``default`` (the rules below), ``off``, or a comma list of
``default`` and extra regular expressions, e.g. ``default,employee-\\d{6},(?i)x-api-key:
(?P<secret>\\S+)``. Commas inside ``()``, ``[]`` or ``{}`` belong to the expression (``\\,``
escapes one elsewhere); a list without ``default`` applies only its own expressions. An
expression masks its whole match, or only its group named ``secret`` when it has one; its
rule name is ``custom_<n>`` (1-based, in list order).

Default rules:

- ``bearer``: ``Bearer <token>`` (the word is kept)
- ``jwt``: JSON Web Tokens (``eyJ...``.``...``.``...``)
- ``aws_access_key``: access key ids ``AKIA...``/``ASIA...`` (20 characters)
- ``aws_secret_key``: 40-character secrets after ``aws_secret_access_key`` and similar names
- ``url_password``: the password of ``scheme://user:password@host``
- ``secret_field``: values of keys that end with ``password``, ``passwd``, ``pwd``,
  ``secret``, ``token``, ``api_key``/``apikey``, ``access_key``, ``private_key`` (any case,
  any prefix: ``DB_PASSWORD``, ``refresh_token``), in text (``key=value``, ``key: value``,
  JSON ``"key": "value"``, URL query strings) and as keys of structured data (JSON, logfmt,
  Forward events; there ``authorization`` too). An unquoted value ends at a space, comma,
  semicolon, ``&`` or bracket; ``tokens_used=3`` is left alone, ``PWD=/home`` is not.
- ``credit_card``: 13-19 digit card numbers, with spaces or dashes, that pass the Luhn check
  and start like a card (``cards``).

Speed: every rule has a cheap trigger (a substring, a secret word followed by a value, or
for card numbers a run of digits found in a byte-translated copy), checked once on a
record's raw text; only the rules whose trigger fires are applied, each string first
checked for a substring the rule cannot match without.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from sidecars.logs import cards
from sidecars.logs.model import Record

BEARER, JWT, AWS_ACCESS_KEY, AWS_SECRET_KEY, URL_PASSWORD, SECRET_FIELD, CREDIT_CARD = (
    1 << bit for bit in range(7)
)
_CUSTOM = 1 << 7
DEFAULT_RULES = {
    BEARER: "bearer",
    JWT: "jwt",
    AWS_ACCESS_KEY: "aws_access_key",
    AWS_SECRET_KEY: "aws_secret_key",
    URL_PASSWORD: "url_password",
    SECRET_FIELD: "secret_field",
    CREDIT_CARD: "credit_card",
}
_MARKERS = {rule: f"[REDACTED:{name}]" for rule, name in DEFAULT_RULES.items()}

_SECRET_WORDS = r"password|passwd|pwd|secret|token|api_?key|apikey|access_?key|private_?key"
# A structured "authorization" value is a credential; in text the bearer rule covers it.
_SECRET_KEY = re.compile(rf"(?i)[\w.@-]*?(?:{_SECRET_WORDS}|authorization)")
# Patterns start with a literal or a small character set where they can, so that the regex
# engine skips to candidates instead of trying every position; boundaries are checked after.
_PATTERNS = {
    BEARER: re.compile(r"((?:[Bb]earer|BEARER)\s+)([A-Za-z0-9\-._~+/]{8,}=*)"),
    JWT: re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    AWS_ACCESS_KEY: re.compile(r"A(?:KIA|SIA)[A-Z0-9]{16}(?![A-Z0-9])"),
    AWS_SECRET_KEY: re.compile(
        r"((?:aws|AWS)_?(?:secret|SECRET)_?(?:(?:access|ACCESS)_?)?(?:key|KEY)[\"']?\s*[:=]\s*"
        r"[\"']?)([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
    ),
    URL_PASSWORD: re.compile(r"(://[^\s:/@]*:)([^\s@/]+)@"),
}
_FIELD_VALUE = re.compile(
    r"""(["']?[ \t]*[=:][ \t]*)("[^"\\]*(?:\\.[^"\\]*)*"|'[^']*'|(?!\[REDACTED)[^\s,;&"'{}\[\]]+)"""
)
_FIELD_REGEX = re.compile(rf"(?i)({_SECRET_WORDS})" + _FIELD_VALUE.pattern)
# What may come before "key" for it to end a secret word (api_key, access-key, secretkey...).
_KEY_PREFIXES = ("api", "api_", "api-", "access", "access_", "access-", "private",
                 "private_", "private-", "secret", "secret_", "secret-")
# What ``suspects`` searches: ASCII letters lowered, the characters of card numbers as "0"
# (no other byte is "0"), anything else as it is.
_FOLD = bytes(
    ord("0")
    if chr(byte) in cards.RUN_CHARACTERS
    else ord(chr(byte).lower())
    if byte < 0x80
    else byte
    for byte in range(256)
)
# The secret words of ``_field_values`` in folded text, where a separator follows (the space
# folded to "0"): found by a letter rare in logs, the rest checked by the regex engine, so
# that only real candidates come back to Python.
_FOLDED_KEY_WORD = re.compile(
    rb"k(?:en(?<=token)|ey(?:"
    + b"|".join(
        rb"(?<=" + re.escape(prefix.encode().translate(_FOLD)) + rb"key)"
        for prefix in _KEY_PREFIXES
    )
    + rb"))(?=[\"']?[0\t]*[=:])"
)
_FOLDED_PASSWORD_WORD = re.compile(rb"w(?:(?<=passw)(?:ord|d)|(?<=pw)d)(?=[\"']?[0\t]*[=:])")
_AWS_KEY_ID_START = re.compile("A[KS]IA")
_PLUS_ONE = (1).__add__


def _word_end(lower: str, stem: str, start: int) -> int:
    """Where the secret word found by ``stem`` at ``start`` ends, or -1."""
    if stem == "passw":
        if lower.startswith("password", start):
            return start + 8
        return start + 6 if lower.startswith("passwd", start) else -1
    if stem == "key":
        return start + 3 if lower[max(0, start - 8) : start].endswith(_KEY_PREFIXES) else -1
    return start + len(stem)


def _field_values(text: str, lower: str, first_only: bool = False) -> list[tuple[int, int]]:
    """Spans of the values of secret fields in ``text`` (``lower`` is ``text.lower()``, the
    same length: ASCII). Finds the secret words with ``str.find``, then matches only the
    separator and value after each: no regular expression runs over the whole text."""
    spans: list[tuple[int, int]] = []
    for stem in ("passw", "pwd", "secret", "token", "key"):
        start = lower.find(stem)
        while start >= 0:
            end = _word_end(lower, stem, start)
            if end >= 0:
                match = _FIELD_VALUE.match(text, end)
                if match is not None:
                    spans.append(match.span(2))
                    if first_only:
                        return spans
            start = lower.find(stem, start + 1)
    return spans


def mask_fields(text: str) -> tuple[str, int]:
    """``secret=value`` pairs in text (``key: value`` and JSON ``"key": "value"`` too) with
    the value masked, and how many."""
    if not text.isascii():  # lower() may change lengths: the (slower) regex keeps offsets
        masked, count = _FIELD_REGEX.subn(_mask_field, text)
        return masked, count
    spans = _field_values(text, text.lower())
    if not spans:
        return text, 0
    pieces: list[str] = []
    done = 0
    for start, end in sorted(set(spans)):
        if start < done:
            continue
        quote = text[start] if text[start] in "\"'" else ""
        pieces += (text[done:start], quote, "[REDACTED:secret_field]", quote)
        done = end
    pieces.append(text[done:])
    return "".join(pieces), (len(pieces) - 1) // 4


@dataclass(frozen=True, slots=True)
class _Custom:
    name: str
    pattern: re.Pattern[str]


def split_spec(spec: str) -> list[str]:
    """``LOGADAPTER_REDACT`` -> its items (commas inside brackets stay, ``\\,`` escapes)."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    escaped = False
    for char in spec:
        if escaped:
            current.append(char if char == "," else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            if char in "([{":
                depth += 1
            elif char in ")]}" and depth > 0:
                depth -= 1
            current.append(char)
    if escaped:
        current.append("\\")
    items.append("".join(current).strip())
    return [item for item in items if item]


def check_spec(spec: str) -> str:
    """Validate ``LOGADAPTER_REDACT`` (for the settings): the spec, or ValueError."""
    Redactor.from_spec(spec)
    return spec.strip()


class Redactor:
    """The redaction rules in effect, with per-rule counts of masked secrets."""

    def __init__(self, defaults: bool, custom: list[_Custom]) -> None:
        self._defaults = defaults
        self._custom = custom
        self.counts: dict[str, int] = {}
        self._key_cache: dict[str, bool] = {}
        self._key_sets: dict[tuple[Any, ...], bool] = {}

    @classmethod
    def from_spec(cls, spec: str) -> Redactor | None:
        """None for ``off``; ValueError naming the bad item otherwise."""
        items = split_spec(spec)
        if [item.lower() for item in items] == ["off"]:
            return None
        allowed = "default, off, or a comma list of default and regular expressions"
        if not items:
            raise ValueError(allowed)
        custom: list[_Custom] = []
        for item in items:
            if item.lower() == "default":
                continue
            try:
                pattern = re.compile(item)
            except re.error as error:
                message = f"{allowed} ({item!r} is not a regular expression: {error})"
                raise ValueError(message) from None
            custom.append(_Custom(f"custom_{len(custom) + 1}", pattern))
        return cls(any(item.lower() == "default" for item in items), custom)

    def scan(self, text: str, keys: dict[str, Any] | None = None) -> int:
        """The rules that may match a record (a bit mask; 0: nothing to do), from its raw
        ``text``. Single characters are checked first (a memchr), longer substrings only
        then. ``keys``: the record came from a JSON object and these are its attributes;
        their top-level keys are checked by name (cached per key set), so the text needs the
        keyword search only where a value has ``=`` in it or an object is nested."""
        found = _CUSTOM if self._custom else 0
        if not self._defaults:
            return found
        if "J" in text and "eyJ" in text:
            found |= JWT
        if ("K" in text and "AKIA" in text) or ("S" in text and "ASIA" in text):
            found |= AWS_ACCESS_KEY
        if "@" in text and "://" in text:
            found |= URL_PASSWORD
        if "earer" in text or ("B" in text and "EARER" in text):
            found |= BEARER
        if keys is None or "=" in text or "{" in text[1:]:
            # The secret words, by a letter each must have: w (password, passwd, pwd), k
            # (token, *key), c (secret); single letters cost a memchr, words a search. Only
            # a word followed by a separator and a value counts ("cache miss for key" does
            # not), so that a record's strings are searched only when there is a secret.
            lower = text.lower()
            secret = "c" in lower and "secret" in lower
            if secret:
                found |= AWS_SECRET_KEY
            if (
                secret
                or ("w" in lower and ("pwd" in lower or "passw" in lower))
                or ("k" in lower and ("key" in lower or "token" in lower))
            ) and (
                _field_values(text, lower, first_only=True)
                if text.isascii()
                else _FIELD_REGEX.search(text) is not None
            ):
                found |= SECRET_FIELD
        if keys and not found & SECRET_FIELD and self.secret_keys(keys):
            found |= SECRET_FIELD
        if cards.may_hold_card(text):
            found |= CREDIT_CARD
        return found

    def suspects(self, texts: Sequence[str]) -> set[int] | None:
        """Indexes of the ``texts`` in which ``scan`` may find something (a superset: those
        are scanned as before, the others need no scan); None when every text must be
        scanned (custom expressions apply to any text).

        The batch is joined and folded once (``_FOLD``: letters lowered, card characters
        as ``0``) and every trigger searched over it, instead of a dozen checks per line:
        the secret words followed by a separator (``key``, ``token``, ``passw(or)d``,
        ``pwd``) and ``AKIA``/``ASIA`` by regular expressions that start with a letter
        rare in logs, so that only candidates come back to Python; ``eyJ`` and a URL
        password's ``@`` by a search for that character (memchr), each hit checked in
        place; the others by a search for the needle; card numbers by runs of ``0``. A
        hit's line is the count of newlines before it (the texts' end offsets when a text
        has newlines of its own). Lines with non-ASCII characters are always suspects
        (``scan`` checks card digits and case folds on ASCII only; folding makes them
        ``?``).

        A JSON line that is not a suspect needs no look at its keys either: a key named like
        a secret holds one of the words searched (``authorization`` too), unless it is
        written with escapes, and a line with a backslash is a suspect.
        """
        if self._custom:
            return None
        joined = "\n".join(texts)
        found: set[int] = set()
        if not joined.isascii():
            found.update(index for index, text in enumerate(texts) if not text.isascii())
        folded = joined.encode("ascii", "replace").translate(_FOLD)
        hits: list[int] = []  # offsets in ``joined`` of what makes its line a suspect
        for pattern in (_FOLDED_KEY_WORD, _FOLDED_PASSWORD_WORD):
            for match in pattern.finditer(folded):
                if _FIELD_VALUE.match(joined, match.end()):
                    hits.append(match.start())
        find = folded.find
        for needle in (b"\\", b"earer", b"secret", b"authoriz"):
            start = find(needle)
            while start >= 0:
                hits.append(start)
                start = find(needle, start + 1)
        hits += [match.start() for match in _AWS_KEY_ID_START.finditer(joined)]
        start = joined.find("J")
        while start >= 0:
            if start >= 2 and joined[start - 2 : start] == "ey":
                hits.append(start)
            start = joined.find("J", start + 1)
        start = find(b"@")
        while start >= 0:  # a password in a URL: "://" and an "@" on the same line
            line_end = find(b"\n", start)
            if line_end < 0:
                line_end = len(folded)
            if find(b"://", folded.rfind(b"\n", 0, start) + 1, line_end) >= 0:
                hits.append(start)
            start = find(b"@", line_end)
        hits += cards.plausible_runs(joined, folded)
        hits.sort()
        lines = []
        line = done = 0
        count = folded.count
        for offset in hits:  # its line: the newlines before it
            line += count(b"\n", done, offset)
            done = offset
            lines.append(line)
        if line + count(b"\n", done) != len(texts) - 1:
            # A text has newlines of its own: a hit's text is found by the texts' ends, and
            # an "@" and a "://" count in one text, not only in one line.
            ends = list(accumulate(map(_PLUS_ONE, map(len, texts))))
            lines = [bisect_right(ends, offset) for offset in hits]
            start = find(b"@")
            while start >= 0:
                text = bisect_right(ends, start)
                if find(b"://", ends[text - 1] if text else 0, ends[text] - 1) >= 0:
                    lines.append(text)
                start = find(b"@", ends[text])
        found.update(lines)
        return found

    def secret_keys(self, data: dict[str, Any]) -> bool:
        """Whether a top-level key of ``data`` is named like a secret. Cached per key set:
        one application writes the same keys on every line. (Nested objects are found by
        ``scan``, which searches the raw text of lines that have them.)"""
        keys: tuple[Any, ...] = tuple(data)  # a Forward event's keys may be other than strings
        known = self._key_sets.get(keys)
        if known is None:
            if len(self._key_sets) > 2048:
                self._key_sets.clear()
            known = self._key_sets[keys] = any(
                isinstance(key, str) and self.is_secret_key(key) for key in keys
            )
        return known

    def redact(self, record: Record, rules: int) -> None:
        """Mask what ``rules`` (from ``scan``) finds in the record's strings, in place."""
        for holder, key in _text_slots(record):
            value = holder[key]
            if isinstance(value, str):
                holder[key] = self.redact_text(value, rules)
        attributes = record.get("attributes")
        if attributes:
            self._redact_structure(attributes, rules)

    def redact_text(self, text: str, rules: int) -> str:
        """``text`` with what ``rules`` find masked. Each rule first checks a substring it
        cannot match without, so a string is searched only by the rules that can hit."""
        if self._defaults:
            if rules & BEARER and ("earer" in text or "EARER" in text):
                text = self._substitute(BEARER, text)
            if rules & JWT and "eyJ" in text:
                text = self._substitute(JWT, text)
            if rules & AWS_ACCESS_KEY and ("AKIA" in text or "ASIA" in text):
                text = self._substitute(AWS_ACCESS_KEY, text)
            if rules & AWS_SECRET_KEY and ("ecret" in text or "ECRET" in text):
                text = self._substitute(AWS_SECRET_KEY, text)
            if rules & URL_PASSWORD and "://" in text and "@" in text:
                text = self._substitute(URL_PASSWORD, text)
            if rules & SECRET_FIELD and ("=" in text or ":" in text):
                text, count = mask_fields(text)
                if count:
                    self.counts["secret_field"] = self.counts.get("secret_field", 0) + count
            if rules & CREDIT_CARD:
                text, count = cards.mask_cards(text)
                if count:
                    self.counts["credit_card"] = self.counts.get("credit_card", 0) + count
        if rules & _CUSTOM:
            for custom in self._custom:
                text = self._apply_custom(custom, text)
        return text

    def _substitute(self, rule: int, text: str) -> str:
        masked = _PATTERNS[rule].sub(_REPLACERS[rule], text)
        if masked != text:
            marker = _MARKERS[rule]
            name = DEFAULT_RULES[rule]
            self.counts[name] = (
                self.counts.get(name, 0) + masked.count(marker) - text.count(marker)
            )
        return masked

    def _apply_custom(self, custom: _Custom, text: str) -> str:
        has_group = "secret" in custom.pattern.groupindex
        hits = 0

        def replace(match: re.Match[str]) -> str:
            nonlocal hits
            hits += 1
            if not has_group or match.start("secret") < 0:
                return f"[REDACTED:{custom.name}]"
            whole = match.group(0)
            start = match.start("secret") - match.start()
            end = match.end("secret") - match.start()
            return f"{whole[:start]}[REDACTED:{custom.name}]{whole[end:]}"

        text = custom.pattern.sub(replace, text)
        if hits:
            self.counts[custom.name] = self.counts.get(custom.name, 0) + hits
        return text

    def is_secret_key(self, key: str) -> bool:
        known = self._key_cache.get(key)
        if known is None:
            if len(self._key_cache) > 4096:
                self._key_cache.clear()
            known = self._key_cache[key] = _SECRET_KEY.fullmatch(key) is not None
        return known

    def _redact_structure(self, data: dict[str, Any] | list[Any], rules: int) -> None:
        """Mask secrets in nested attributes: values of secret keys whole, strings by rule."""
        if isinstance(data, list):
            for index, value in enumerate(data):
                data[index] = self._redact_value(value, rules)
            return
        keys = rules & SECRET_FIELD and self._defaults
        loose: dict[Any, Any] = data  # a Forward event's keys may be other than strings
        for key, value in loose.items():
            if (
                keys
                and value is not None
                and not isinstance(value, (dict, list, bool))
                and isinstance(key, str)
                and self.is_secret_key(key)
            ):
                if not (isinstance(value, str) and value.startswith("[REDACTED")):
                    data[key] = "[REDACTED:secret_field]"
                    self.counts["secret_field"] = self.counts.get("secret_field", 0) + 1
            else:
                data[key] = self._redact_value(value, rules)

    def _redact_value(self, value: Any, rules: int) -> Any:
        if isinstance(value, str):
            return self.redact_text(value, rules)
        if isinstance(value, (dict, list)):
            self._redact_structure(value, rules)
        elif (
            rules & CREDIT_CARD
            and isinstance(value, int)
            and 10**12 <= value < 10**19
            and cards.is_card_number(str(value))
        ):
            self.counts["credit_card"] = self.counts.get("credit_card", 0) + 1
            return "[REDACTED:credit_card]"
        return value


def _text_slots(record: Record) -> Iterator[tuple[dict[str, Any], str]]:
    """The free-text strings of a record outside ``attributes``."""
    yield record, "message"
    error = record.get("error")
    if error:  # any of its fields may be missing (an error object with a stack alone)
        if "message" in error:
            yield error, "message"
        if "stack_trace" in error:
            yield error, "stack_trace"
    http = record.get("http")
    if http:
        if "path" in http:
            yield http, "path"
        if "referer" in http:
            yield http, "referer"


def _mask_bearer(match: re.Match[str]) -> str:
    return f"{match.group(1)}[REDACTED:bearer]"


def _mask_jwt(match: re.Match[str]) -> str:
    start = match.start()
    text = match.string
    if start and (text[start - 1].isalnum() or text[start - 1] in "_-"):
        return match.group()  # inside a longer word: not a token of its own
    return "[REDACTED:jwt]"


def _mask_aws_key(match: re.Match[str]) -> str:
    start = match.start()
    if start and match.string[start - 1].isalnum():
        return match.group()
    return "[REDACTED:aws_access_key]"


def _mask_aws_secret(match: re.Match[str]) -> str:
    return f"{match.group(1)}[REDACTED:aws_secret_key]"


def _mask_url_password(match: re.Match[str]) -> str:
    return f"{match.group(1)}[REDACTED:url_password]@"


def _mask_field(match: re.Match[str]) -> str:
    value = match.group(3)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{match.group(2)}{quote}[REDACTED:secret_field]{quote}"


_REPLACERS: dict[int, Callable[[re.Match[str]], str]] = {
    BEARER: _mask_bearer,
    JWT: _mask_jwt,
    AWS_ACCESS_KEY: _mask_aws_key,
    AWS_SECRET_KEY: _mask_aws_secret,
    URL_PASSWORD: _mask_url_password,
}
