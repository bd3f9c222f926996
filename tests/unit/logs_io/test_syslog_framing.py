"""RFC 6587 framing: octet counting and newline framing, chosen from the first byte."""

from __future__ import annotations

import pytest

from sidecars.logs.sources.syslog import SyslogFramer, SyslogFramingError, message_text


def test_octet_counting_across_chunk_boundaries() -> None:
    framer = SyslogFramer(1000)
    assert framer.feed(b"1") == []
    assert framer.feed(b"3 <13>hello w") == []
    assert framer.feed(b"o") == []
    assert framer.feed(b"r3 <1") == [b"<13>hello wor"]
    assert framer.feed(b">") == [b"<1>"]


def test_octet_counting_frames() -> None:
    framer = SyslogFramer(1000)
    messages = framer.feed(b"5 <1>ab6 <2>cde\n7 <3>f g")
    assert framer.mode == "octet_counting"
    assert messages == [b"<1>ab", b"<2>cde"]
    assert framer.feed(b"h") == [b"<3>f gh"]


def test_message_containing_newlines_is_kept_whole() -> None:
    framer = SyslogFramer(1000)
    assert framer.feed(b"8 <1>a\nb\nc") == [b"<1>a\nb\nc"]


def test_newline_framing_detected_from_a_pri() -> None:
    framer = SyslogFramer(1000)
    assert framer.feed(b"<13>one\n<13>tw") == [b"<13>one"]
    assert framer.mode == "newline"
    assert framer.feed(b"o\n\n") == [b"<13>two"]


def test_an_octet_counted_message_past_the_cap_keeps_the_cap_and_says_what_was_dropped() -> None:
    framer = SyslogFramer(4)
    assert framer.feed(b"10 0123456789") == [b"0123 [truncated: 6 bytes dropped]"]
    assert framer.feed(b"3 abc") == [b"abc"]


def test_an_oversized_message_is_skipped_across_chunks() -> None:
    framer = SyslogFramer(4)
    assert framer.feed(b"10 012") == []
    assert framer.feed(b"3") == [b"0123 [truncated: 6 bytes dropped]"]
    assert framer.feed(b"4567") == []
    assert framer.feed(b"89") == []
    assert framer.feed(b"1 x") == [b"x"]


def test_newline_framing_keeps_a_message_up_to_the_cap() -> None:
    framer = SyslogFramer(8)
    assert framer.feed(b"<13>long") == []
    assert framer.feed(b"\n<13>" + b"y" * 20 + b"\n<13>z\n") == [
        b"<13>long",
        b"<13>yyyy [truncated: 16 bytes dropped]",
        b"<13>z",
    ]


@pytest.mark.parametrize("garbage", [b"12x <1>a", b"99999999999 a", b"012 abc"])
def test_bad_octet_counts_are_framing_errors(garbage: bytes) -> None:
    framer = SyslogFramer(1000)
    with pytest.raises(SyslogFramingError):
        framer.feed(garbage)


def test_message_text_strips_trailers_and_repairs_utf8() -> None:
    assert message_text(b"<13>hi\r\n\x00") == "<13>hi"
    assert message_text(b"<13>\xff") == "<13>\ufffd"


def test_the_last_newline_framed_message_needs_no_newline_at_the_end() -> None:
    framer = SyslogFramer(1000)
    assert framer.feed(b"<13>one\n<13>last") == [b"<13>one"]
    assert framer.finish() == b"<13>last"
    counted = SyslogFramer(1000)
    assert counted.feed(b"5 <13>a9 <13") == [b"<13>a"]
    assert counted.finish() is None  # an incomplete octet-counted frame is not a message
