"""Forward events -> LogLines: Docker records, structured events, invalid UTF-8."""

from __future__ import annotations

from sidecars.logs.sources.forward import event_to_line, repair_record


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
