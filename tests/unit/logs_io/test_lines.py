"""Splitting byte streams into lines: carries, offsets, CRLF, invalid UTF-8, long lines."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from support import metric_value

from sidecars.logs.sources.lines import LineSplitter
from sidecars.observability import LOG_ADAPTER_METRICS


def invalid_utf8_count() -> float:
    return metric_value(
        generate_latest(LOG_ADAPTER_METRICS).decode(),
        "logadapter_input_errors_total",
        input="stdin",
        kind="invalid_utf8",
    )


def test_text_waits_for_the_newline_across_chunks() -> None:
    splitter = LineSplitter(100, "stdin")
    assert splitter.split_text(b"one\ntw") == ["one"]
    assert splitter.split_text(b"o\r\nthree\n\n") == ["two", "three", ""]
    assert splitter.finish() is None


def test_crlf_is_dropped_from_every_line_of_a_block_the_last_one_too() -> None:
    splitter = LineSplitter(100, "stdin")
    # Each block ends before its last newline: its last line's "\r" is at the very end.
    assert splitter.split_text(b"a\r\nb\r\nc\r") == ["a", "b"]
    assert splitter.split_text(b"\nd\r\ne\r\n") == ["c", "d", "e"]
    assert splitter.split_text(b"inner\rcarriage return\n") == ["inner\rcarriage return"]


def test_raw_lines_lose_the_crlf_too() -> None:
    splitter = LineSplitter(100, "syslog")
    assert splitter.split_raw(b"<13>one\r\n<13>two\r\n<13>th") == [b"<13>one", b"<13>two"]
    assert splitter.split_raw(b"ree\n") == [b"<13>three"]


def test_finish_returns_an_unterminated_last_line() -> None:
    splitter = LineSplitter(100, "stdin")
    assert splitter.split_text(b"a\nlast") == ["a"]
    assert splitter.finish() == (2, "last")


def test_offsets_are_byte_offsets_of_line_starts() -> None:
    splitter = LineSplitter(100, "tail", position=10)
    assert splitter.split_with_offsets("é1\nx".encode()) == [(10, "é1")]
    assert splitter.position == 14
    assert splitter.read_position == 15
    assert splitter.split_with_offsets(b"y\r\nz\n") == [(14, "xy"), (18, "z")]
    assert splitter.position == 20


def test_invalid_utf8_is_replaced_and_counted() -> None:
    before = invalid_utf8_count()
    splitter = LineSplitter(100, "stdin")
    assert splitter.split_text(b"ok \xff\xfe\n") == ["ok \ufffd\ufffd"]
    assert invalid_utf8_count() == before + 1


def line_cuts() -> float:
    return metric_value(
        generate_latest(LOG_ADAPTER_METRICS).decode(),
        "logadapter_records_truncated_total",
        reason="line_hard_cap",
    )


def test_a_long_line_waits_whole_for_its_newline_up_to_the_cap() -> None:
    splitter = LineSplitter(100, "stdin")
    assert splitter.split_text(b"x" * 60) == []
    assert splitter.split_text(b"x" * 40 + b"\nnext\n") == ["x" * 100, "next"]


def test_a_line_past_the_cap_keeps_the_cap_and_says_how_many_bytes_were_dropped() -> None:
    before = line_cuts()
    splitter = LineSplitter(8, "tail")
    assert splitter.split_with_offsets(b"ok\n" + b"x" * 20) == [(0, "ok")]
    assert splitter.read_position == 23
    assert splitter.split_with_offsets(b"y" * 50) == []
    assert splitter.position == 3  # a re-read starts at the line
    assert splitter.split_with_offsets(b"yy\nnext\n") == [
        (3, "xxxxxxxx [truncated: 64 bytes dropped]"),
        (76, "next"),
    ]
    assert splitter.position == 81
    assert line_cuts() == before + 1


def test_a_line_past_the_cap_within_one_block_is_cut_and_the_next_one_waits() -> None:
    splitter = LineSplitter(4, "tail")
    assert splitter.split_with_offsets(b"ok\n" + b"z" * 10 + b"\nnext\npart") == [
        (0, "ok"),
        (3, "zzzz [truncated: 6 bytes dropped]"),
        (14, "next"),
    ]
    assert splitter.split_with_offsets(b"ial\n") == [(19, "part [truncated: 3 bytes dropped]")]
    raw = LineSplitter(4, "syslog")
    assert raw.split_raw(b"abcdefg\r\nab\r\nc") == [b"abcd [truncated: 4 bytes dropped]", b"ab"]
    assert raw.split_raw(b"\n") == [b"c"]


def test_the_cut_never_splits_a_character() -> None:
    splitter = LineSplitter(5, "stdin")
    assert splitter.split_text("abcdé".encode() + b"fgh\n") == [
        "abcd [truncated: 5 bytes dropped]"
    ]


def test_a_cut_line_at_the_end_of_the_stream_is_handed_on() -> None:
    splitter = LineSplitter(4, "stdin")
    assert splitter.split_text(b"a\n" + b"z" * 10) == ["a"]
    assert splitter.finish() == (2, "zzzz [truncated: 6 bytes dropped]")
    assert splitter.finish() is None


def test_memory_stays_bounded_whatever_arrives() -> None:
    splitter = LineSplitter(1000, "stdin")
    for _ in range(100):
        splitter.split_text(b"z" * 4096)
    assert len(splitter._carry) <= 1000
    assert splitter._kept is not None and len(splitter._kept) == 1000


def expected_lines(data: bytes, cap: int) -> list[tuple[int, bytes]]:
    """What a splitter must make of ``data``, whatever the reads: every line with its offset,
    one over the cap kept to the cap (never inside a character) with the marker."""
    lines = []
    offset = 0
    for raw in data.split(b"\n"):
        line = raw
        if len(raw) > cap:
            keep = cap
            while 0 < keep < len(raw) and (raw[keep] & 0xC0) == 0x80:
                keep -= 1
            keep = keep or cap
            line = raw[:keep] + b" [truncated: %d bytes dropped]" % (len(raw) - keep)
        lines.append((offset, line.removesuffix(b"\r")))
        offset += len(raw) + 1
    if lines[-1][1] == b"":
        lines.pop()  # the stream ended with its newline
    return lines


@settings(max_examples=400)
@given(
    st.lists(st.sampled_from([b"a", b"bb", b"\n", b"\r\n", "é".encode(), b"x" * 7]), max_size=40),
    st.integers(2, 9),  # a cap of one byte may end inside "é"
    st.lists(st.integers(1, 12), min_size=1, max_size=10),
)
def test_any_reads_give_the_same_lines(pieces: list[bytes], cap: int, reads: list[int]) -> None:
    data = b"".join(pieces)
    splitter = LineSplitter(cap, "tail")
    got: list[tuple[int, str]] = []
    at, turn = 0, 0
    while at < len(data):
        size = reads[turn % len(reads)]
        got += splitter.split_with_offsets(data[at : at + size])
        at = min(at + size, len(data))
        turn += 1
        assert splitter.read_position == at
    last = splitter.finish()
    if last is not None:
        got.append(last)
    expected = expected_lines(data, cap)
    assert got == [(offset, line.decode(errors="replace")) for offset, line in expected]
    for split in ("split_text", "split_raw"):
        other = LineSplitter(cap, "stdin")
        lines: list[Any] = []
        for start in range(0, len(data), reads[0]):
            lines += getattr(other, split)(data[start : start + reads[0]])
        last = other.finish()
        if last is not None:
            lines.append(last[1] if split == "split_text" else last[1].encode())
        want = [line.decode(errors="replace") if split == "split_text" else line
                for _, line in expected]
        assert lines == want, split
