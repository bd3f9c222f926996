"""The demo's plain-text view: one line per second, an event line per circuit transition.

Plain lines that read the same in a terminal, a pipe or a CI log; ANSI colours only on a TTY
(and never with ``NO_COLOR`` set).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, TextIO

import orjson

from sidecars.demo.logship import NormalisedRecords
from sidecars.demo.observe import format_transitions
from sidecars.demo.processes import ChildFailed
from sidecars.demo.script import Phase
from sidecars.demo.traffic import OrderTally

_STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
_STATE_STYLE = {"closed": "green", "open": "red", "half_open": "yellow"}
_GROUPS = (
    f"{'':9}{'orders':<15}{'inventory via the ambassador':<30}{'payments via the breaker':<29}"
)
_COLUMNS = (
    f"{'time':>7}  {'placed':>6} {'failed':>6}  {'ok':>5} {'retried':>7} {'failed':>6} "
    f"{'retries':>7}  {'ok':>5} {'failed':>6} {'rejected':>8} {'ms':>5}  {'circuit':<9} "
    f"{'logs':>5}"
)


@dataclass(frozen=True, slots=True)
class DemoSummary:
    seconds: float
    phases: int
    orders: OrderTally
    retries: int
    budget_exhausted: int
    transitions: Counter[tuple[str, str]]
    circuit_state: str
    records: NormalisedRecords
    formats: Counter[str]
    lines_shipped: int
    lines_lost: int
    exit_codes: dict[str, int]


class Terminal:
    def __init__(self, stream: TextIO, colour: bool) -> None:
        self.stream = stream
        self.colour = colour
        self.closed = False

    @classmethod
    def for_stdout(cls) -> Terminal:
        colour = (
            sys.stdout.isatty()
            and "NO_COLOR" not in os.environ
            and (os.environ.get("TERM") != "dumb")
        )
        return cls(sys.stdout, colour)

    def paint(self, text: str, style: str) -> str:
        if not self.colour or style not in _STYLES:
            return text
        return f"\033[{_STYLES[style]}m{text}\033[0m"

    def line(self, text: str = "") -> None:
        if self.closed:
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except BrokenPipeError:
            # The reader went away (``sidecars demo | head``): keep running, stop printing.
            self.closed = True

    def banner(self, rows: list[tuple[str, str, str]], script_seconds: float, speed: float) -> None:
        self.line(self.paint("sidecars demo: the example stack as local processes", "bold"))
        pace = "" if speed == 1 else f" at {speed:g}x speed"
        self.line(
            f"healthy -> blips -> outage -> recovery, all in ~{script_seconds / speed:.0f} s"
            f"{pace}, then again"
        )
        self.line()
        for name, address, role in rows:
            self.line(f"  {name:<12} {address:<34} {self.paint(role, 'dim')}")
        self.line()

    def started(self, ready_seconds: dict[str, float]) -> None:
        timings = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in ready_seconds.items())
        self.line(self.paint(f"started {len(ready_seconds)} processes; ready in: {timings}", "dim"))

    def legend(self) -> None:
        self.line(
            self.paint(
                "retried: calls that failed first and succeeded through the ambassador's "
                "retries; rejected: answered by the open circuit without calling payments "
                "(ms: their median latency); logs: records the adapter normalised",
                "dim",
            )
        )

    def phase(self, number: int, total: int, phase: Phase, elapsed: float) -> None:
        self.line()
        title = f"== {number}/{total} {phase.name}, {phase.seconds:.0f} s (at {elapsed:.1f}s): "
        self.line(self.paint(title, "bold") + phase.headline)
        self.line(self.paint(_GROUPS, "dim"))
        self.line(self.paint(_COLUMNS, "dim"))

    def tick(self, elapsed: float, tally: OrderTally, retries: int, state: str, logs: int) -> None:
        counts = tally.counts
        median = tally.median_rejected_ms()
        cells = [
            (f"{elapsed:6.1f}s", ""),
            (f"  {counts['placed']:>6}", ""),
            (f" {counts['failed']:>6}", "red" if counts["failed"] else ""),
            (f"  {counts['inventory_ok']:>5}", ""),
            (f" {counts['inventory_ok_after_retries']:>7}", "yellow" if retries else ""),
            (f" {counts['inventory_failed']:>6}", "red" if counts["inventory_failed"] else ""),
            (f" {retries:>7}", ""),
            (f"  {counts['payments_ok']:>5}", ""),
            (f" {counts['payments_failed']:>6}", "red" if counts["payments_failed"] else ""),
            (f" {counts['payments_rejected']:>8}", ""),
            (f" {'-' if median is None else f'{median:.1f}':>5}", ""),
            (f"  {state:<9}", _STATE_STYLE.get(state, "")),
            (f" {logs:>5}", ""),
        ]
        self.line("".join(self.paint(text, style) for text, style in cells))

    def transition(self, elapsed: float, sidecar: str, edge: tuple[str, str]) -> None:
        style = _STATE_STYLE.get(edge[1], "bold")
        text = f"{sidecar} circuit {edge[0]} -> {edge[1]}"
        self.line(f"{elapsed:6.1f}s  " + self.paint(f">> {text}", style))

    def record(self, record: dict[str, Any]) -> None:
        self.line(self.paint("   log record ", "cyan") + shown_record(record))

    def failure(self, failure: ChildFailed, kept: str | None) -> None:
        self.line(self.paint(f"sidecars demo: {failure}", "red"))
        self.line(failure.output_tail)
        if kept:
            self.line(f"process logs kept in {kept}")

    def summary(self, summary: DemoSummary) -> None:
        orders = summary.orders.counts
        self.line()
        self.line(
            self.paint(
                f"== summary: {summary.seconds:.1f} s, {summary.phases} phases, "
                f"{orders['orders']} orders",
                "bold",
            )
        )
        self.line(
            f"  orders        {orders['orders']} sent: {orders['placed']} placed, "
            f"{orders['failed']} failed"
            + (
                f" ({orders['app_unreachable']} app unreachable)"
                if orders["app_unreachable"]
                else ""
            )
        )
        self.line(
            f"  inventory     {orders['inventory_calls']} calls via the ambassador: "
            f"{orders['inventory_ok']} ok ({orders['inventory_ok_after_retries']} after retries), "
            f"{orders['inventory_failed']} failed; retries {summary.retries}, "
            f"budget exhausted {summary.budget_exhausted}"
        )
        median = summary.orders.median_rejected_ms()
        self.line(
            f"  payments      {orders['payments_calls']} calls via the breaker: "
            f"{orders['payments_ok']} ok, {orders['payments_failed']} failed, "
            f"{orders['payments_rejected']} rejected by the open circuit"
            + (f" (median {median:.1f} ms)" if median is not None else "")
        )
        self.line(
            f"  circuit       transitions {format_transitions(summary.transitions)}; "
            f"now {summary.circuit_state}"
        )
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.records.kinds.items()))
        formats = ", ".join(f"{name} {n}" for name, n in sorted(summary.formats.items()))
        self.line(
            f"  log records   {summary.records.count} normalised ({kinds or 'none'}); "
            f"formats {formats or 'unknown'}; app lines shipped {summary.lines_shipped}"
            + (f", lost {summary.lines_lost}" if summary.lines_lost else "")
        )
        failed = {name: code for name, code in summary.exit_codes.items() if code != 0}
        self.line(
            "  processes     "
            + (
                f"{len(summary.exit_codes)} stopped cleanly (exit 0)"
                if not failed
                else "exit codes " + ", ".join(f"{n} {c}" for n, c in failed.items())
            )
        )


def shown_record(record: dict[str, Any]) -> str:
    """The record as compact JSON, with a long stack trace cut to its first line."""
    shown = dict(record)
    if isinstance(shown.get("container_id"), str):
        shown["container_id"] = shown["container_id"][:12]  # as `docker ps` shows it
    error = shown.get("error")
    if isinstance(error, dict) and isinstance(error.get("stack_trace"), str):
        lines = error["stack_trace"].splitlines()
        if len(lines) > 1:
            shown["error"] = {**error, "stack_trace": f"{lines[0]} ... ({len(lines)} lines)"}
    return orjson.dumps(shown).decode()
