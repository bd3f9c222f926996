"""Hypothesis against the real process: one ``sidecars log-adapter`` with all four inputs
(stdin, tail, Forward, syslog) gets arbitrary shapes (deep nesting, odd types, huge values)
between two marker lines on every input; the markers always come out, Forward chunks are
acknowledged, and the process stays ready. In the compiled test run the process is the
compiled build."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from fluent.sender import FluentSender
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from logadapter_support import Adapter, start_adapter, wait_for
from support import LOOPBACK, free_port, http_get


def _nested(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = {"k": leaf}
    return leaf


shapes = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
        st.text(max_size=20), st.binary(max_size=20),
        st.integers(0, 100_000).map(lambda n: "h" * n),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-3, 3)), children, max_size=3),
        st.builds(_nested, st.integers(0, 400), children),
    ),
    max_leaves=8,
)
events = st.dictionaries(st.sampled_from(["message", "level", "log", "err", "x", "deep"]), shapes,
                         max_size=3)


class AllInputs:
    def __init__(self, adapter: Adapter, tail_file: Path, forward_port: int, syslog_port: int):
        self.adapter = adapter
        self.tail_file = tail_file
        self.forward_port = forward_port
        self.syslog_port = syslog_port
        self.example = 0


@pytest.fixture(scope="module")
def all_inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AllInputs]:
    log_dir = tmp_path_factory.mktemp("hostile-logs")
    tail_file = log_dir / "app.log"
    tail_file.touch()
    forward_port, syslog_port = free_port(), free_port()
    adapter = start_adapter(
        {
            "LOGADAPTER_INPUTS": "stdin,tail,forward,syslog",
            "LOGADAPTER_TAIL_PATHS": str(log_dir / "*.log"),
            "LOGADAPTER_FORWARD_LISTEN": f"{LOOPBACK}:{forward_port}",
            "LOGADAPTER_SYSLOG_LISTEN": f"{LOOPBACK}:{syslog_port}",
            "LOGADAPTER_MULTILINE_TIMEOUT": "100ms",
        },
        stdin=subprocess.PIPE,
    )
    yield AllInputs(adapter, tail_file, forward_port, syslog_port)
    adapter.close()


def line_of(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return repr(value).encode()[:100_000]


@settings(
    max_examples=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking real processes: too slow
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(events, min_size=1, max_size=2))
def test_every_input_survives_arbitrary_shapes(
    all_inputs: AllInputs, values: list[dict[str, Any]]
) -> None:
    all_inputs.example += 1
    n = all_inputs.example
    adapter = all_inputs.adapter
    assert adapter.process is not None and adapter.process.stdin is not None
    lines = [line_of(value) for value in values]
    # stdin and tail
    def block(name: str) -> bytes:
        return b"".join([f"before {n} {name}\n".encode(), *(line + b"\n" for line in lines),
                         f"after {n} {name}\n".encode()])

    adapter.process.stdin.write(block("stdin"))
    adapter.process.stdin.flush()
    with all_inputs.tail_file.open("ab") as tail:
        tail.write(block("tail"))
    # syslog over TCP and UDP
    header = b"<14>1 2026-11-26T10:00:00Z host app 1 - - "
    with socket.create_connection((LOOPBACK, all_inputs.syslog_port)) as tcp:
        tcp.sendall(b"".join(header + text + b"\n" for text in [
            f"before {n} syslog-tcp".encode(), *lines, f"after {n} syslog-tcp".encode()
        ]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for text in [*lines, f"after {n} syslog-udp".encode()]:
            if len(header + text) < 60_000:
                udp.sendto(header + text, (LOOPBACK, all_inputs.syslog_port))
    # Forward: fluent-logger (Message mode), and a PackedForward chunk that must be acked
    packable = [value for value in values if _packable(value)]
    sender = FluentSender("app", host=LOOPBACK, port=all_inputs.forward_port, bufmax=8 << 20)
    try:
        for value in [{"message": f"before {n} fluent"}, *packable,
                      {"message": f"after {n} fluent"}]:
            sender.emit("web", value)
    finally:
        sender.close()
    packer = msgpack.Packer(use_bin_type=True)
    entries = b"".join(packer.pack([1795687200, event]) for event in [
        {"message": f"before {n} packed"}, *packable, {"message": f"after {n} packed"}
    ])
    with socket.create_connection((LOOPBACK, all_inputs.forward_port), timeout=30) as sock:
        sock.sendall(packer.pack(["app", entries, {"chunk": f"c{n}"}]))
        answer = msgpack.Unpacker(raw=False)
        answer.feed(sock.recv(1024))
        assert list(answer) == [{"ack": f"c{n}"}]
    expected = [f"{edge} {n} {name}" for name in ("stdin", "tail", "syslog-tcp", "fluent",
                                                  "packed") for edge in ("before", "after")]
    expected.append(f"after {n} syslog-udp")

    def arrived() -> bool:
        return set(expected) <= set(adapter.messages())

    wait_for(arrived, 30, lambda: f"missing {set(expected) - set(adapter.messages())}\n"
                                  + adapter.stderr_text()[-3000:])
    assert http_get(f"{adapter.admin_url}/readyz")[0] == 200


def _packable(value: Any) -> bool:
    try:
        msgpack.packb(value, use_bin_type=True)
    except (ValueError, TypeError, OverflowError):
        return False
    return True
