"""Which lines belong together: a sans-IO state machine, one per stream.

``classify(state, text, lines)`` tells whether ``text`` continues the pending group (a
stack trace, an indented continuation) or starts a new one, and the group's state after
it. The processor keeps the pending group per stream and emits it when a line starts a
new group, when the stream is idle for ``multiline_timeout``, or at flush.

States follow the traces they recognise:

- ``HEAD``: an ordinary line, maybe with indented continuation lines (JavaScript
  ``    at fn (file:1:2)`` frames and Ruby ``from file.rb:1:in ...`` frames are indented too).
- ``PY_TRACE`` -> ``PY_END`` -> ``PY_CHAIN``: ``Traceback (most recent call last):`` (joined to
  the line before it, as ``logger.exception`` writes them), its frames, the exception line,
  then ``During handling of the above exception...`` and a chained traceback.
- ``JAVA``: ``pkg.SomeException: msg`` (joined to the one head line before it: the
  logback/Spring line), ``\\tat`` frames, ``Caused by:``, ``... N more``.
- ``GO``: ``panic:``/``fatal error:`` and the goroutine dump (blank lines included).

A blank line joins any pending group (trailing ones are dropped when the group is emitted)
and is skipped when nothing is pending.
"""

from __future__ import annotations

import re

from sidecars.logs.stacktrace import PYTHON_TRACEBACK, TraceKind

NONE, HEAD, PY_TRACE, PY_END, PY_CHAIN, JAVA, GO = -1, 0, 1, 2, 3, 4, 5
TRACE_STATES = frozenset({PY_TRACE, PY_END, PY_CHAIN, JAVA, GO})
KIND_OF_STATE: dict[int, TraceKind] = {
    PY_TRACE: "python", PY_END: "python", PY_CHAIN: "python", JAVA: "java", GO: "go"
}

_PYTHON_CHAIN = ("During handling of the above exception", "The above exception was")
_PYTHON_EXCEPTION = re.compile(r"[A-Za-z_][\w.]*(?::|$)")
_JAVA_EXCEPTION = re.compile(
    r"(?:[a-zA-Z_$][\w$]*\.)+[\w$]*(?:Exception|Error|Throwable)(?::\s|:?$)"
)
_JAVA_THREAD = 'Exception in thread "'
_JAVA_MORE = ("Caused by: ", "Suppressed: ")
CAPITAL_TRACE_STARTS = (PYTHON_TRACEBACK, _JAVA_THREAD)
"""How the only lines led by a capital letter that ``classify`` may not answer ``NEW_HEAD``
for start (with Ruby frames, which hold ``.rb:``)."""
_GO_DUMP = re.compile(
    r"goroutine \d+ \[|created by |\[signal |exit status \d|[\w$./*()\[\]{}-]+\(.*\)$"
)
_GO_HEADS = ("panic: ", "fatal error: ")
_RUBY_FRAME = re.compile(r"\S+\.rb:\d+:in [`'][^`']*'$")  # a frame, not ``...: msg (Class)``

ORDINARY_STARTS = frozenset("{<[0123456789")
"""First characters of lines that can only start a group (when no trace is in progress)."""

# classify() answers with these constant tuples: (joins the pending group, state after).
NEW_HEAD = (False, HEAD)
SKIP = (False, NONE)


def _is_java_exception(text: str) -> bool:
    return text[0].islower() and _JAVA_EXCEPTION.match(text) is not None


def classify(state: int, text: str, lines: int) -> tuple[bool, int]:
    """(``text`` joins the pending group, the group state afterwards). ``state`` is the
    pending group's state (``NONE`` when nothing is pending) and ``lines`` its line count.
    ``SKIP``: a blank line with nothing pending."""
    first = text[:1]
    if first in ORDINARY_STARTS and state <= HEAD:
        return NEW_HEAD  # JSON, syslog, timestamp-led and bracketed lines: the common case
    if not text or text.isspace():
        return SKIP if state == NONE else (True, state)
    if first in {" ", "\t"}:
        return NEW_HEAD if state == NONE else (True, state)
    if state == PY_TRACE:
        if _PYTHON_EXCEPTION.match(text):
            return (True, PY_END)
    elif state == PY_END:
        if text.startswith(_PYTHON_CHAIN):
            return (True, PY_CHAIN)
    elif state == PY_CHAIN:
        if text.startswith(PYTHON_TRACEBACK):
            return (True, PY_TRACE)
        if text.startswith(_PYTHON_CHAIN):
            return (True, PY_CHAIN)
    elif state == JAVA:
        if text.startswith(_JAVA_MORE):
            return (True, JAVA)
    elif state == GO and _GO_DUMP.match(text):
        return (True, GO)
    # ``text`` does not continue a trace in progress: does it start or attach one?
    if first == "T" and text.startswith(PYTHON_TRACEBACK):
        return (True, PY_TRACE) if state == HEAD else (False, PY_TRACE)
    if (first in {"p", "f"}) and text.startswith(_GO_HEADS):
        return (False, GO)
    if first == "E" and text.startswith(_JAVA_THREAD):
        return (False, JAVA)
    if _is_java_exception(text):
        return (True, JAVA) if state == HEAD and lines == 1 else (False, JAVA)
    if state != NONE and ".rb:" in text and _RUBY_FRAME.match(text) is not None:
        return (True, state)
    return NEW_HEAD


def is_frame(line: str) -> bool:
    """A JavaScript or Ruby stack frame (``at fn (file:1:2)``, ``from file.rb:1:in ...``)."""
    stripped = line.lstrip()
    return stripped.startswith(("at ", "from ")) or _RUBY_FRAME.match(stripped) is not None
