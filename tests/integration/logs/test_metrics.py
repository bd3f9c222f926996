"""What a real log adapter process exports on /metrics: the ``logadapter_*`` families only,
the process collector and the build info."""

from __future__ import annotations

from logadapter_support import StartAdapter, forward_env
from metrics_support import assert_process_and_build_info, families
from support import free_port


def test_the_log_adapter_exports_only_its_families(adapters: StartAdapter) -> None:
    text = adapters(forward_env(free_port())).metrics()
    names = families(text)
    assert "logadapter_records_in_total" in names
    assert not {name for name in names if name.startswith("sidecar_")}
    assert_process_and_build_info(text)
