"""Forward events -> LogLines and runs of lines: Docker records, structured events, invalid
UTF-8."""

from __future__ import annotations

import dataclasses
from typing import Any

from sidecars.logs.forward_protocol import EventTuple, ForwardMessage
from sidecars.logs.pipeline import LineRun
from sidecars.logs.sources.forward import event_to_line, events_to_parts, repair_record


def test_a_docker_record_is_a_line_of_its_container_stream() -> None:
    record = {
        "container_id": "c0ffee",
        "container_name": "/web",
        "source": "stderr",
        "log": "boom",
        "partial_message": "true",
        "partial_id": "p",
    }
    line = event_to_line("docker.web", 12.5, record, received_at=99.0)
    assert line.text == "boom"
    assert line.stream == "stderr"
    assert line.container_id == "c0ffee"
    assert line.container_name == "web"
    assert line.fields is record  # whole, so the processor sees the partial markers
    assert line.timestamp == 12.5
    assert line.stream_key == "forward:c0ffee:stderr"


def test_streams_of_one_container_are_kept_apart_and_tags_without_container_too() -> None:
    out = event_to_line("t", None, {"log": "a", "source": "stdout", "container_id": "x"}, 0.0)
    err = event_to_line("t", None, {"log": "a", "source": "stderr", "container_id": "x"}, 0.0)
    bare = event_to_line("app.web", None, {"log": "a"}, 0.0)
    assert len({out.stream_key, err.stream_key, bare.stream_key}) == 3
    assert bare.stream_key == "forward:app.web:-"


def test_other_records_are_structured_events() -> None:
    record = {"level": "info", "msg": "hi", "log": {"nested": "not a string"}}
    line = event_to_line("app", 1.0, record, received_at=2.0)
    assert line.text == ""
    assert line.fields == record
    assert line.stream_key == "forward:app"


def test_repair_leaves_clean_records_alone_and_fixes_surrogates() -> None:
    clean = {"msg": "héllo", "n": 2**70, 5: ["x"]}
    assert repair_record(clean) is clean
    dirty = {"msg": "bad \udcff", "list": ["ok", "\udcfe"], "\udcfa": 1}
    assert repair_record(dirty) == {"msg": "bad \ufffd", "list": ["ok", "\ufffd"], "\ufffd": 1}


def docker(log: str, **fields: Any) -> dict[str, Any]:
    return {"container_id": "c1", "container_name": "/web", "source": "stdout", "log": log,
            **fields}


def test_docker_records_come_in_runs_of_one_container_stream() -> None:
    events: list[EventTuple] = [
        (1.0, docker("one\n")),
        (2.0, docker("two")),
        (3.0, docker("err", source="stderr")),
        (None, {"level": "info", "msg": "structured"}),
        (4.0, docker("part", partial_message="true", partial_id="p")),
        (5.0, docker("three", ecs_cluster="shop")),
        (6.0, docker("four", ecs_cluster="shop")),
    ]
    parts = events_to_parts([ForwardMessage("web", events, None, "forward")], received_at=9.0)
    assert [type(part).__name__ for part in parts] == ["LineRun", "LineRun", "list", "LineRun"]
    first, errors, singles, firelens = parts
    assert isinstance(first, LineRun) and isinstance(errors, LineRun)
    assert isinstance(singles, list) and isinstance(firelens, LineRun)
    assert first.texts == ["one", "two"]  # a record's newline is not part of its line
    assert first.times == [1.0, 2.0]
    assert not first.unwrap
    assert first.extra is None
    like = event_to_line("web", None, docker(""), received_at=9.0)
    assert first.like == dataclasses.replace(like, fields=None)
    assert errors.like.stream == "stderr" and errors.texts == ["err"]
    assert [line.text for line in singles] == ["", "part"]  # a structured event, a partial
    assert firelens.texts == ["three", "four"]
    assert firelens.extra == {"ecs_cluster": "shop"}


def test_records_of_a_clean_message_are_not_checked_again() -> None:
    dirty = docker("bad \udcff")
    clean_parts = events_to_parts([ForwardMessage("t", [(1.0, dirty)], None, "x", True)], 0.0)
    checked_parts = events_to_parts([ForwardMessage("t", [(1.0, dirty)], None, "x")], 0.0)
    assert isinstance(clean_parts[0], LineRun) and isinstance(checked_parts[0], LineRun)
    assert clean_parts[0].texts == ["bad \udcff"]  # trusted: it decoded strictly
    assert checked_parts[0].texts == ["bad \ufffd"]
