"""The grouping state machine: which lines join the pending group, in which state."""

from __future__ import annotations

import pytest

from sidecars.logs import multiline
from sidecars.logs.multiline import GO, HEAD, JAVA, NONE, PY_CHAIN, PY_END, PY_TRACE, classify


def walk(texts: list[str]) -> list[tuple[bool, int]]:
    """classify() over lines as the processor drives it: the answers, line by line."""
    state, count, answers = NONE, 0, []
    for text in texts:
        joins, new_state = classify(state, text, count)
        answers.append((joins, new_state))
        if joins:
            count += 1
        elif new_state != NONE:
            count = 1
        state = new_state if (joins or new_state != NONE) else state
    return answers


def test_python_traceback_joins_the_log_line_before_it() -> None:
    answers = walk(
        [
            "ERROR:app:failed",
            "Traceback (most recent call last):",
            '  File "a.py", line 1, in f',
            "    g()",
            "ValueError: bad",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            '  File "a.py", line 3, in f',
            "RuntimeError: worse",
            "INFO:app:next",
        ]
    )
    assert answers == [
        (False, HEAD), (True, PY_TRACE), (True, PY_TRACE), (True, PY_TRACE), (True, PY_END),
        (True, PY_END), (True, PY_CHAIN), (True, PY_CHAIN), (True, PY_TRACE), (True, PY_TRACE),
        (True, PY_END), (False, HEAD),
    ]


def test_a_line_that_is_not_an_exception_ends_a_cut_traceback() -> None:
    answers = walk(["Traceback (most recent call last):", '  File "a.py"', '{"msg":"next"}'])
    assert answers == [(False, PY_TRACE), (True, PY_TRACE), (False, HEAD)]


def test_java_exception_joins_one_head_line_and_takes_its_frames() -> None:
    answers = walk(
        [
            "2026-11-26 10:00:00.000 ERROR 1 --- [main] c.e.App : failed",
            "java.lang.IllegalStateException: closed",
            "\tat com.example.App.run(App.java:10)",
            "Caused by: java.io.IOException: gone",
            "\t... 3 more",
            "2026-11-26 10:00:01.000 INFO 1 --- [main] c.e.App : next",
        ]
    )
    assert answers == [
        (False, HEAD), (True, JAVA), (True, JAVA), (True, JAVA), (True, JAVA), (False, HEAD)
    ]


def test_a_java_exception_after_a_multi_line_group_starts_its_own() -> None:
    answers = walk(["head", "  more", "java.lang.RuntimeException: x", "\tat A.b(A.java:1)"])
    assert answers == [(False, HEAD), (True, HEAD), (False, JAVA), (True, JAVA)]


def test_uncaught_java_exception_starts_a_group() -> None:
    assert classify(HEAD, 'Exception in thread "main" java.lang.Error: x', 1) == (False, JAVA)


def test_go_panic_with_goroutine_dump() -> None:
    answers = walk(
        [
            "panic: runtime error: index out of range",
            "",
            "goroutine 1 [running]:",
            "main.main()",
            "\t/app/main.go:12 +0x1d",
            "created by main.start in goroutine 1",
            "exit status 2",
            "panic: a second panic starts a new record",
        ]
    )
    assert [joins for joins, _ in answers] == [False, True, True, True, True, True, True, False]
    assert {state for _, state in answers} == {GO}


def test_indented_lines_continue_any_group() -> None:
    assert classify(HEAD, "    at handler (/app/index.js:3:11)", 1) == (True, HEAD)
    assert classify(JAVA, "\tat A.b(A.java:1)", 3) == (True, JAVA)
    assert classify(NONE, "  nothing to continue", 0) == (False, HEAD)


def test_blank_lines_join_a_group_or_are_skipped() -> None:
    assert classify(NONE, "", 0) == multiline.SKIP
    assert classify(NONE, "   ", 0) == multiline.SKIP
    assert classify(HEAD, "", 1) == (True, HEAD)


def test_rails_backtrace_lines_join_but_a_ruby_error_line_starts_a_group() -> None:
    assert classify(HEAD, "app/models/order.rb:12:in `total'", 1) == (True, HEAD)
    assert classify(HEAD, "app/models/order.rb:12:in 'Order#total'", 2) == (True, HEAD)
    assert classify(HEAD, "/app/a.rb:3:in `div': divided by 0 (ZeroDivisionError)", 2) == (
        False, HEAD
    )


@pytest.mark.parametrize(
    "text",
    ['{"msg":"x"}', "<13>Nov 26 10:00:00 h a: x", "[2026-11-26 10:00:00] x",
     "2026-11-26 10:00:00 INFO x", "level=info msg=x", "plain words"],
)
def test_ordinary_lines_start_groups(text: str) -> None:
    assert classify(HEAD, text, 1) == (False, HEAD)
    assert classify(NONE, text, 0) == (False, HEAD)


def test_frames_are_recognised() -> None:
    assert multiline.is_frame("    at f (a.js:1:2)")
    assert multiline.is_frame("\tfrom /app/a.rb:7:in `<main>'")
    assert multiline.is_frame("app/models/order.rb:12:in `total'")
    assert not multiline.is_frame("  --verbose   say more")
