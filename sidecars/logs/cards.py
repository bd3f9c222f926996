"""Payment card numbers in text: found cheaply, checked strictly.

A card number is 13-19 digits, maybe grouped by spaces or dashes, that starts like a card
(Visa 4, Mastercard 51-55 and 22-27, Amex 34/37, Diners 30/36/38/39, JCB 35, Discover and
UnionPay 6, Maestro 50) and passes the Luhn check. The fraction of a decimal number
(``0.4111...``) and part of a longer run of digits are not card numbers.

To find candidates without a regular expression over every line, the text's bytes are
translated (digits, spaces and dashes -> ``0``, anything else -> ``x``): a run of 13 ``0`` is
where a card could be, and only there does the regular expression run. Epoch timestamps in
milliseconds or nanoseconds start with 1 and dates have too few digits: no candidates.
"""

from __future__ import annotations

import re

RUN_CHARACTERS = "0123456789 -"
"""What a card number is written with."""
_CLASSES = bytes(ord("0") if chr(byte) in RUN_CHARACTERS else ord("x") for byte in range(256))
_RUN = b"0" * 13
_ZEROS = re.compile(b"0*")
_PREFIXES = ("4", "51", "52", "53", "54", "55", "22", "23", "24", "25", "26", "27",
             "34", "37", "30", "36", "38", "39", "35", "6", "50")
_FIRST_DIGITS = frozenset("23456")
_NUMBER = re.compile(r"\d(?:[ -]?\d){12,18}")
MASK = "[REDACTED:credit_card]"


def _classes(text: str) -> bytes:
    try:
        encoded = text.encode()
    except UnicodeEncodeError:  # a lone surrogate (not from the inputs, which replace them)
        encoded = text.encode("utf-8", "replace")
    return encoded.translate(_CLASSES)


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def is_card_number(text: str) -> bool:
    """``text`` (digits, spaces, dashes) is a card number by length, prefix and Luhn."""
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and digits.startswith(_PREFIXES) and luhn_valid(digits)


def plausible_runs(text: str, classes: bytes, *, first_only: bool = False) -> list[int]:
    """Where runs of digits, spaces and dashes that could hold a card number (13 or more
    digits, starting like a card) begin in ``text`` (only the first with ``first_only``).
    ``classes`` has one byte per character of ``text``: ``0`` for the ``RUN_CHARACTERS``,
    anything else for the others."""
    found: list[int] = []
    index = classes.find(_RUN)
    while index >= 0:
        match = _ZEROS.match(classes, index)
        assert match is not None  # "0*" always matches
        end = match.end()
        run = text[index:end].lstrip(" -")
        if run[:1] in _FIRST_DIGITS and len(run) - run.count(" ") - run.count("-") >= 13:
            found.append(index)
            if first_only:
                break
        index = classes.find(_RUN, end)
    return found


def may_hold_card(text: str) -> bool:
    """Whether ``text`` has a run of digits that could be a card number (cheap)."""
    classes = _classes(text)
    if classes.find(_RUN) < 0:
        return False
    if not text.isascii():  # byte offsets are not character offsets: let the masking decide
        return True
    return bool(plausible_runs(text, classes, first_only=True))


def mask_cards(text: str) -> tuple[str, int]:
    """``text`` with its card numbers masked, and how many."""
    classes = _classes(text)
    index = classes.find(_RUN)
    if index < 0:
        return text, 0
    if not text.isascii():
        index, classes = 0, b""  # search the whole text: offsets differ from the bytes'
    pieces: list[str] = []
    done = 0
    while index >= 0:
        end = classes.find(b"x", index) if classes else -1
        if end < 0:
            end = len(text)
        for match in _NUMBER.finditer(text, index, end):
            start = match.start()
            if start and text[start - 1] in ".0123456789":  # 0.4111...: a fraction
                continue
            if match.end() < len(text) and text[match.end()].isdigit():
                continue
            if is_card_number(match.group()):
                pieces += (text[done:start], MASK)
                done = match.end()
        index = classes.find(_RUN, end) if classes else -1
    if not pieces:
        return text, 0
    pieces.append(text[done:])
    return "".join(pieces), (len(pieces) - 1) // 2
