"""Checks of a real sidecar's /metrics shared by the proxy and log adapter tests."""

from __future__ import annotations

from support import metric_value

import sidecars
from sidecars.logs import build_kind
from sidecars.observability import build_kinds


def families(text: str) -> set[str]:
    """The metric families of a Prometheus text exposition (its ``# TYPE`` lines)."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def assert_process_and_build_info(text: str) -> None:
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= families(text)
    assert metric_value(text, "process_resident_memory_bytes") > 0
    build = build_kind()  # the test process and the sidecar run the same build
    kinds = build_kinds()  # each compiled group's, the same in both processes too
    assert kinds["sidecars_logs"] == build
    info = metric_value(
        text, "sidecars_build_info", version=sidecars.__version__, build=build, **kinds
    )
    assert info == 1, text[-2000:]
