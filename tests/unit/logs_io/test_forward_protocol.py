"""The Forward protocol codec: every carrier mode, EventTime, ack, handshake, bad input."""

from __future__ import annotations

import gzip
import struct
from typing import Any

import msgpack
import pytest
from fluent.sender import EventTime
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecars.logs import forward_protocol as fp


def unpack_one(data: bytes) -> Any:
    unpacker = fp.new_unpacker()
    unpacker.feed(data)
    return next(unpacker)


def packb(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def test_message_mode_with_event_time_and_chunk() -> None:
    wire = packb(["app", EventTime(1700000000, 250_000_000), {"log": "hi"}, {"chunk": "abc"}])
    message = fp.decode_message(unpack_one(wire))
    assert isinstance(message, fp.ForwardMessage)
    assert message.mode == "message"
    assert message.tag == "app"
    assert message.events == [(1700000000.25, {"log": "hi"})]
    assert message.chunk == "abc"


def test_forward_mode_integer_and_float_times_without_option() -> None:
    wire = packb(["app", [[1700000000, {"a": 1}], [1700000001.5, {"b": 2}]]])
    message = fp.decode_message(unpack_one(wire))
    assert isinstance(message, fp.ForwardMessage)
    assert message.mode == "forward"
    assert message.events == [(1700000000.0, {"a": 1}), (1700000001.5, {"b": 2})]
    assert message.chunk is None


def entries_stream(count: int) -> bytes:
    return b"".join(packb([EventTime(1700000000 + i, 0), {"n": i}]) for i in range(count))


@pytest.mark.parametrize("as_str", [False, True])
def test_packed_forward_bin_and_str(as_str: bool) -> None:
    stream = entries_stream(3)
    # Fluentd's out_forward sends the stream as msgpack str holding binary.
    payload: Any = stream.decode("utf-8", "surrogateescape") if as_str else stream
    packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape")
    wire = packer.pack(["app", payload, {"chunk": "c1", "size": 3}])
    message = fp.decode_message(unpack_one(wire))
    assert isinstance(message, fp.ForwardMessage)
    assert message.mode == "packed_forward"
    assert [record["n"] for _, record in message.events] == [0, 1, 2]


def test_compressed_packed_forward_with_concatenated_gzip_members() -> None:
    stream = entries_stream(4)
    payload = gzip.compress(stream[:20]) + gzip.compress(stream[20:])
    wire = packb(["app", payload, {"compressed": "gzip", "chunk": "z"}])
    message = fp.decode_message(unpack_one(wire))
    assert isinstance(message, fp.ForwardMessage)
    assert message.mode == "compressed_packed_forward"
    assert [record["n"] for _, record in message.events] == [0, 1, 2, 3]


def test_gzip_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp, "MAX_DECOMPRESSED_BYTES", 1000)
    payload = gzip.compress(packb([1, {"x": "a" * 5000}]))
    with pytest.raises(fp.ForwardProtocolError, match="limit"):
        fp.decode_message(["app", payload, {"compressed": "gzip"}])


def test_nil_is_a_heartbeat() -> None:
    assert isinstance(fp.decode_message(unpack_one(b"\xc0")), fp.Heartbeat)


@pytest.mark.parametrize(
    "value",
    [
        42,
        ["only-a-tag"],
        [1, 2, {}],
        ["tag", 1700000000],
        ["tag", [[1, {}]], "not an option map"],
        ["tag", 1, {}, {"chunk": 5}],
        ["tag", b"\x93\x01\x02", {"compressed": "gzip"}],
    ],
)
def test_values_that_are_not_forward_messages(value: Any) -> None:
    with pytest.raises(fp.ForwardProtocolError):
        fp.decode_message(value)


def test_event_time_must_be_eight_bytes_of_ext_zero() -> None:
    assert fp.event_time(msgpack.ExtType(0, struct.pack(">II", 5, 500_000_000))) == 5.5
    with pytest.raises(fp.ForwardProtocolError):
        fp.event_time(msgpack.ExtType(1, b"12345678"))
    with pytest.raises(fp.ForwardProtocolError):
        fp.event_time(msgpack.ExtType(0, b"1234"))


def test_invalid_utf8_survives_the_unpacker_as_surrogates() -> None:
    wire = b"\x93\xa3app\x01\x81\xa3log\xa2\xff\xfe"
    message = fp.decode_message(unpack_one(wire))
    assert isinstance(message, fp.ForwardMessage)
    assert message.events[0][1]["log"] == "\udcff\udcfe"


def test_packed_forward_encoding_round_trips_through_the_decoder() -> None:
    time = fp.rfc3339_to_event_time("2026-11-26T10:00:00.123456Z", fallback=0.0)
    wire = fp.encode_packed_forward("out", [(time, {"message": "m"})], "chunk-1")
    message = fp.decode_message(unpack_one(wire))
    assert isinstance(message, fp.ForwardMessage)
    assert message.chunk == "chunk-1"
    stamp, record = message.events[0]
    assert record == {"message": "m"}
    assert stamp == pytest.approx(1795687200.123456, abs=1e-6)


def test_unreadable_timestamp_falls_back() -> None:
    time = fp.rfc3339_to_event_time("yesterday", fallback=12.5)
    assert fp.event_time(time) == 12.5


def test_ack_answers_the_chunk_it_was_given() -> None:
    chunk = fp.new_chunk_id()
    assert fp.is_ack_for(unpack_one(fp.encode_ack(chunk)), chunk)
    assert not fp.is_ack_for(unpack_one(fp.encode_ack("other")), chunk)


def test_handshake_accepts_the_right_key_and_refuses_a_wrong_one() -> None:
    nonce = b"n" * 16
    helo = unpack_one(fp.encode_helo(nonce))
    assert fp.decode_helo(helo) == nonce
    ping, salt = fp.encode_ping("client.example", nonce, "secret")
    check = fp.check_ping(unpack_one(ping), nonce, "secret")
    assert check.ok
    pong = unpack_one(fp.encode_pong(check, "server.example", nonce, "secret"))
    fp.check_pong(pong, salt, nonce, "secret")

    wrong = fp.check_ping(unpack_one(ping), nonce, "other-key")
    assert not wrong.ok
    refused = unpack_one(fp.encode_pong(wrong, "server.example", nonce, "other-key"))
    with pytest.raises(fp.ForwardProtocolError, match="refused"):
        fp.check_pong(refused, salt, nonce, "secret")


def test_a_server_that_does_not_know_the_key_is_detected() -> None:
    nonce = b"n" * 16
    ping, salt = fp.encode_ping("client", nonce, "secret")
    check = fp.check_ping(unpack_one(ping), nonce, "secret")
    impostor = unpack_one(fp.encode_pong(check, "server", nonce, "guess"))
    with pytest.raises(fp.ForwardProtocolError, match="digest"):
        fp.check_pong(impostor, salt, nonce, "secret")


def test_packed_entries_that_are_valid_utf8_are_marked_clean() -> None:
    stream = packb([EventTime(1700000000, 500_000_000), {"log": "héllo"}]) + packb(
        [1700000001, {"log": "int time"}]
    )
    message = fp.decode_message(unpack_one(packb(["app", stream])))
    assert isinstance(message, fp.ForwardMessage)
    assert message.clean
    assert message.events == [(1700000000.5, {"log": "héllo"}), (1700000001.0, {"log": "int time"})]


def test_packed_entries_with_invalid_utf8_are_decoded_again_keeping_the_bytes() -> None:
    stream = packb([1, {"log": "ok"}]) + b"\x92\x02\x81\xa3log\xa2\xff\xfe"
    message = fp.decode_message(unpack_one(packb(["app", stream])))
    assert isinstance(message, fp.ForwardMessage)
    assert not message.clean
    assert message.events == [(1.0, {"log": "ok"}), (2.0, {"log": "\udcff\udcfe"})]


BAD_ENTRIES = [
    ([1, "not a map"], "a record is a str, not a map"),
    (["bad-time", {"log": "x"}], "time is a str"),
    ([True, {"log": "x"}], "time is a boolean"),
    ([msgpack.ExtType(1, b"12345678"), {"log": "x"}], "time ext type 1 of 8 bytes"),
    ([1, {"log": "x"}, "extra"], "an entry is not [time, record]"),
    ("not an array", "an entry is not [time, record]"),
]


def _good(text: str) -> list[Any]:
    return [1.5, {"log": text}]


@pytest.mark.parametrize(("entry", "detail"), BAD_ENTRIES)
@pytest.mark.parametrize("mode", ["forward", "packed_forward", "compressed_packed_forward"])
def test_a_bad_entry_is_dropped_and_its_neighbours_kept(
    mode: str, entry: Any, detail: str
) -> None:
    entries = [_good("one"), entry, _good("two"), entry]
    if mode == "forward":
        value: list[Any] = ["app", entries, {"chunk": "c"}]
    else:
        stream = b"".join(packb(item) for item in entries)
        if mode == "packed_forward":
            value = ["app", stream, {"chunk": "c"}]
        else:
            value = ["app", gzip.compress(stream), {"chunk": "c", "compressed": "gzip"}]
    message = fp.decode_message(unpack_one(packb(value)))
    assert isinstance(message, fp.ForwardMessage)
    assert message.mode == mode
    assert message.events == [(1.5, {"log": "one"}), (1.5, {"log": "two"})]
    assert (message.chunk, message.dropped, message.dropped_detail) == ("c", 2, detail)


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (["app", 1, "not a map", {"chunk": "c"}], "a record is a str, not a map"),
        (["app", True, {"log": "x"}, {"chunk": "c"}], "time is a boolean"),
        (["app", msgpack.ExtType(0, b"1234"), {"log": "x"}, {"chunk": "c"}],
         "time ext type 0 of 4 bytes"),
    ],
)
def test_a_bad_message_mode_record_is_dropped_and_its_chunk_kept(value: Any, detail: str) -> None:
    message = fp.decode_message(unpack_one(packb(value)))
    assert isinstance(message, fp.ForwardMessage)
    assert (message.mode, message.events, message.chunk) == ("message", [], "c")
    assert (message.dropped, message.dropped_detail) == (1, detail)


def test_a_clean_request_drops_nothing() -> None:
    message = fp.decode_message(["app", [_good("one")]])
    assert isinstance(message, fp.ForwardMessage)
    assert (message.dropped, message.dropped_detail) == (0, "")


def test_bad_entries_of_invalid_utf8_packed_entries_are_counted_once() -> None:
    """The strict pass is abandoned at the invalid UTF-8: its drops are not counted twice."""
    stream = packb([1, "not a map"]) + packb(_good("ok")) + b"\x92\x01\x81\xa3log\xa2\xff\xfe"
    message = fp.decode_message(unpack_one(packb(["app", stream])))
    assert isinstance(message, fp.ForwardMessage)
    assert not message.clean
    assert [record for _, record in message.events] == [{"log": "ok"}, {"log": "\udcff\udcfe"}]
    assert message.dropped == 1


def test_a_bad_entry_next_to_one_too_deep_for_msgpack_is_dropped_alone() -> None:
    deep = b"\x92\xcb" + b"\x00" * 8 + b"\x81\xa1a" * 2000 + b"\xa1x"
    good = packb([1.0, {"message": "good"}])
    message = fp.decode_message(["app", good + deep + packb([1, "bad"]) + good])
    assert isinstance(message, fp.ForwardMessage)
    assert [record for _, record in message.events] == [
        {"message": "good"}, fp.TOO_DEEP_FOR_MSGPACK, {"message": "good"}
    ]
    assert message.dropped == 1


def test_messages_of_the_other_modes_are_not_marked_clean() -> None:
    for value in (["app", 1, {"log": "x"}], ["app", [[1, {"log": "x"}]]]):
        message = fp.decode_message(value)
        assert isinstance(message, fp.ForwardMessage)
        assert not message.clean


msgpack_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(),
        st.binary(), st.builds(msgpack.ExtType, st.integers(1, 127), st.binary()),
    ),
    lambda children: st.one_of(st.lists(children), st.dictionaries(st.text(), children)),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.lists(msgpack_values, min_size=1, max_size=4))
def test_object_end_finds_each_object_of_a_stream(values: list[Any]) -> None:
    data = b"".join(packb(value) for value in values)
    ends = []
    at = 0
    while at < len(data):
        at = fp.object_end(data, at)
        ends.append(at)
    assert len(ends) == len(values)
    assert ends[-1] == len(data)


def test_an_entry_too_deep_for_msgpack_becomes_a_marker_between_its_neighbours() -> None:
    deep = b"\x92\xcb" + b"\x00" * 8 + b"\x81\xa1a" * 2000 + b"\xa1x"
    good = packb([1.0, {"message": "good"}])
    message = fp.decode_message(["app", good + deep + good, {"chunk": "c"}])
    assert isinstance(message, fp.ForwardMessage)
    assert [record for _, record in message.events] == [
        {"message": "good"}, fp.TOO_DEEP_FOR_MSGPACK, {"message": "good"}
    ]
    with pytest.raises(fp.ForwardProtocolError):
        fp.decode_message(["app", good + deep[:-1], {"chunk": "c"}])
