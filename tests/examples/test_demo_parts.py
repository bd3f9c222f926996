"""The demo's parts without sockets: metrics reading, transition replay, log sampling, tallies,
the script's time scale, option parsing and the plain-text view."""

from __future__ import annotations

import io
import struct

import msgpack
import orjson
import pytest

from sidecars.demo.logship import NormalisedRecords, event_time, sample_kind
from sidecars.demo.observe import CircuitWatch, Scrape, format_transitions
from sidecars.demo.ports import DemoPorts, base_port
from sidecars.demo.script import SCRIPT, scaled, speed_factor
from sidecars.demo.terminal import Terminal, shown_record
from sidecars.demo.traffic import OrderTally

METRICS = """\
# HELP sidecar_circuit_transitions_total Circuit state changes.
# TYPE sidecar_circuit_transitions_total counter
sidecar_circuit_transitions_total{from="closed",sidecar="breaker",to="open",upstream="p"} {a}
sidecar_circuit_transitions_total{from="open",sidecar="breaker",to="half_open",upstream="p"} {b}
sidecar_circuit_transitions_total{from="half_open",sidecar="breaker",to="closed",upstream="p"} {c}
sidecar_circuit_transitions_total{from="half_open",sidecar="breaker",to="open",upstream="p"} {d}
# HELP sidecar_circuit_state 1 for the current circuit state.
# TYPE sidecar_circuit_state gauge
sidecar_circuit_state{sidecar="breaker",state="closed",upstream="p"} {closed}
sidecar_circuit_state{sidecar="breaker",state="open",upstream="p"} {open}
sidecar_circuit_state{sidecar="breaker",state="half_open",upstream="p"} 0.0
# HELP sidecar_retries_total Retries made, by reason.
# TYPE sidecar_retries_total counter
sidecar_retries_total{reason="503",sidecar="ambassador",upstream="i"} 7.0
sidecar_retries_total{reason="reset",sidecar="ambassador",upstream="i"} 2.0
"""


def metrics(a: int, b: int, c: int, d: int, state: str) -> Scrape:
    text = METRICS
    for key, value in {"a": a, "b": b, "c": c, "d": d}.items():
        text = text.replace("{" + key + "}", f"{value}.0")
    text = text.replace("{closed}", "1.0" if state == "closed" else "0.0")
    text = text.replace("{open}", "1.0" if state == "open" else "0.0")
    return Scrape.parse(text)


def test_scrape_sums_samples_by_labels() -> None:
    scrape = metrics(1, 0, 0, 0, "open")
    assert scrape.total("sidecar_retries_total") == 9
    assert scrape.total("sidecar_retries_total", reason="reset") == 2
    assert scrape.total("sidecar_missing_total") == 0
    assert scrape.circuit_state() == "open"
    assert scrape.transitions()[("closed", "open")] == 1


def test_transitions_between_two_scrapes_are_replayed_in_order() -> None:
    watch = CircuitWatch()
    assert watch.update(metrics(0, 0, 0, 0, "closed")) == []
    # Open, a failed trial, a second open period and a good trial, all between two scrapes.
    assert watch.update(metrics(1, 2, 1, 1, "closed")) == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert watch.state == "closed"
    assert watch.update(metrics(1, 2, 1, 1, "closed")) == []
    assert watch.update(metrics(2, 2, 1, 1, "open")) == [("closed", "open")]
    assert watch.state == "open"


def test_transition_replay_follows_the_state_machine() -> None:
    watch = CircuitWatch()
    edges = watch.update(metrics(1, 2, 1, 1, "closed"))
    assert len(edges) == 5
    state = "closed"
    for source, target in edges:
        assert source == state, edges
        state = target


def test_format_transitions_in_state_order() -> None:
    counts = metrics(1, 3, 1, 2, "closed").transitions()
    assert format_transitions(counts) == (
        "closed->open 1, open->half_open 3, half_open->closed 1, half_open->open 2"
    )
    assert format_transitions({}) == "none"


def record(**fields: object) -> bytes:
    return orjson.dumps({"level": "info", "message": "m", "service": "orders", **fields})


def test_records_are_counted_and_one_of_each_kind_is_sampled() -> None:
    records = NormalisedRecords()
    records.add(record(http={"path": "/healthz"}))
    records.add(record(http={"path": "/orders"}))
    records.add(record(http={"path": "/orders"}))
    records.add(record(error={"type": "E", "message": "x", "stack_trace": "a\nb"}))
    records.add(record(level="warn"))
    records.add(record(trace_id="t1"))
    records.add(record(message="listening"))
    records.add(b"not json")
    records.add(b"[1, 2]")
    assert records.count == 7 and records.invalid == 2
    assert records.kinds == {"access log": 3, "stack trace": 1, "event": 3}
    shown = records.take_to_show()
    assert [sample_kind(r) for r in shown] == [
        "access log",
        "stack trace",
        "warning",
        "traced event",
    ]
    assert records.take_to_show() == []


def test_order_tally_reads_the_apps_answers() -> None:
    tally = OrderTally()
    ok = {"ok": True, "attempts": 1}
    tally.add({"status": "placed", "calls": {"inventory": ok, "payments": ok}})
    tally.add(
        {"status": "placed", "calls": {"inventory": {"ok": True, "attempts": 3}, "payments": ok}}
    )
    tally.add({"status": "failed", "calls": {"inventory": {"ok": False, "attempts": 3}}})
    tally.add(
        {
            "status": "failed",
            "calls": {
                "inventory": ok,
                "payments": {"ok": False, "sidecar_error": "circuit_open", "ms": 0.4},
            },
        }
    )
    tally.add({"status": "failed", "calls": {"inventory": ok, "payments": {"ok": False}}})
    tally.add_unreachable()
    counts = tally.counts
    assert (counts["orders"], counts["placed"], counts["failed"]) == (6, 2, 4)
    assert counts["inventory_ok_after_retries"] == 1 and counts["inventory_failed"] == 1
    assert (counts["payments_rejected"], counts["payments_failed"]) == (1, 1)
    assert tally.median_rejected_ms() == 0.4
    tally.reset()
    assert tally.counts == {} and tally.median_rejected_ms() is None


def test_script_covers_every_phase_and_scales() -> None:
    assert [phase.name for phase in SCRIPT] == ["healthy", "blips", "outage", "recovery"]
    assert 20 <= sum(phase.seconds for phase in SCRIPT) <= 30
    fast = scaled(SCRIPT, 2.5)
    assert sum(p.seconds for p in fast) == pytest.approx(sum(p.seconds for p in SCRIPT) / 2.5)


@pytest.mark.parametrize("raw", ["0", "fast", "-1", "50"])
def test_bad_speed_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="SIDECARS_DEMO_SPEED"):
        speed_factor(raw)


def test_ports_form_a_fixed_block() -> None:
    assert base_port(None) == 18000 and base_port("") == 18000
    ports = DemoPorts(base_port("19000"))
    assert ports.app == 19080 and ports.breaker == 19001 and ports.adapter_admin == 19903
    assert len(set(ports.named().values())) == len(ports.named())
    for raw in ("80", "x", "65000"):
        with pytest.raises(ValueError, match="SIDECARS_DEMO_BASE_PORT"):
            base_port(raw)


def test_event_time_is_the_forward_ext_type() -> None:
    ext = event_time(1700000000.25)
    assert ext.code == 0
    assert struct.unpack(">II", ext.data) == (1700000000, 250000000)
    assert msgpack.unpackb(msgpack.packb(["t", ext, {}])) == ["t", ext, {}]


def test_plain_output_without_a_tty_and_colour_with_one() -> None:
    plain = Terminal(io.StringIO(), colour=False)
    plain.transition(1.0, "breaker", ("closed", "open"))
    assert "\033[" not in plain.stream.getvalue()
    assert "breaker circuit closed -> open" in plain.stream.getvalue()
    coloured = Terminal(io.StringIO(), colour=True)
    coloured.transition(1.0, "breaker", ("closed", "open"))
    assert "\033[31m" in coloured.stream.getvalue()


def test_shown_record_cuts_the_stack_trace_and_container_id() -> None:
    shown = orjson.loads(
        shown_record(
            {
                "container_id": "a" * 64,
                "error": {"type": "E", "message": "m", "stack_trace": "Traceback\n  File x\nE: m"},
            }
        )
    )
    assert shown["container_id"] == "a" * 12
    assert shown["error"]["stack_trace"] == "Traceback ... (3 lines)"
