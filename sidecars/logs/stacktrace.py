"""The ``error`` field of a record from a stack trace's text.

``describe`` returns ``{"type", "message", "stack_trace"}`` for Python tracebacks (the last
exception of a chain: the one that was raised), Java/Kotlin traces (the top exception, with
``Exception in thread "..."`` removed), Go panics, Ruby backtraces and JavaScript stacks.
``type`` is left out when the trace does not name one.
"""

from __future__ import annotations

import re
from typing import Literal

TraceKind = Literal["python", "java", "go", "ruby", "stack"]

PYTHON_TRACEBACK = "Traceback (most recent call last):"
_PYTHON_CHAIN = ("During handling of the above exception", "The above exception was")
_ERROR_LINE = re.compile(r"([A-Za-z_$][\w$.]*(?:<[^>]*>)?)(?:: (.*)|:)")
_BARE_ERROR = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*")
_JAVA_THREAD = re.compile(r'Exception in thread "[^"]*" ')
_RUBY_ERROR = re.compile(r"(?:\S+?:\d+:in [`'][^']*': )?(.*) \(([A-Z][\w:]*)\)")
_GO_HEADS = (("panic: ", "panic"), ("fatal error: ", "fatal error"))


def _python_error(lines: list[str]) -> tuple[str | None, str]:
    for line in reversed(lines):
        if not line or line[0] in " \t" or line.startswith(PYTHON_TRACEBACK):
            continue
        if line.startswith(_PYTHON_CHAIN):
            continue
        match = _ERROR_LINE.fullmatch(line)
        if match:
            return match.group(1), match.group(2) or ""
        if _BARE_ERROR.fullmatch(line):
            return line, ""
        return None, line
    return None, ""


def _error_line(line: str) -> tuple[str | None, str]:
    """``pkg.Type: message`` / ``Type`` / ``message (Type)`` -> (type, message)."""
    line = _JAVA_THREAD.sub("", line, count=1).strip()
    match = _ERROR_LINE.fullmatch(line)
    if match:
        return match.group(1), match.group(2) or ""
    match = _RUBY_ERROR.fullmatch(line)
    if match:
        return match.group(2), match.group(1)
    if _BARE_ERROR.fullmatch(line) and ("Error" in line or "Exception" in line):
        return line, ""
    return None, line


def guess_kind(trace: str) -> TraceKind:
    if PYTHON_TRACEBACK in trace:
        return "python"
    if trace.startswith(("panic: ", "fatal error: ")) or "\ngoroutine " in trace:
        return "go"
    if ".rb:" in trace and ":in " in trace:
        return "ruby"
    if "\n\tat " in trace or "\nCaused by: " in trace:
        return "java"
    return "stack"


def describe(trace: str, kind: TraceKind | None = None, context: str = "") -> dict[str, str]:
    """Error fields of ``trace``; ``context`` is the log message the trace was attached to,
    used when the trace itself does not name its error (Rails writes ``msg (Class)`` in the
    log line and only frames below it)."""
    trace = trace.rstrip("\n")
    kind = kind or guess_kind(trace)
    lines = trace.split("\n")
    error_type: str | None = None
    message = ""
    if kind == "python":
        error_type, message = _python_error(lines)
    elif kind == "go":
        first = lines[0]
        for prefix, name in _GO_HEADS:
            if first.startswith(prefix):
                error_type = name
                message = first[len(prefix) :].removesuffix(" [recovered]")
                break
        else:
            message = first
    else:
        error_type, message = _error_line(lines[0])
    if error_type is None and context:
        error_type, message = _error_line(context)
    error = {"message": message, "stack_trace": trace}
    if error_type is not None:
        return {"type": error_type, **error}
    return error
