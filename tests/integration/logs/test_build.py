"""Which build the tests run: the pure-Python package (the everyday run) or the compiled copy
that ``make test-compiled`` builds (``tools.compiled``), where every log test runs again. A
compiled run that silently fell back to the Python modules would test nothing new, and a
stray extension module in the working tree would shadow every edit: both fail here."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES

from logadapter_support import StartAdapter, forward_env

from sidecars.logs import build_kind, normalise, processor, timestamps

EXPECTED = "compiled" if os.environ.get("SIDECARS_EXPECT_COMPILED") == "1" else "pure Python"


def test_the_test_process_runs_the_expected_build() -> None:
    assert build_kind() == EXPECTED
    compiled = tuple(EXTENSION_SUFFIXES)
    for module in (processor, normalise, timestamps):
        assert (module.__file__ or "").endswith(compiled) == (EXPECTED == "compiled")


def test_the_sidecar_process_runs_the_expected_build() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecars", "--version"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith(f"(log processing: {EXPECTED})"), result.stdout


def test_status_names_the_build(adapters: StartAdapter, forward_port: int) -> None:
    adapter = adapters(forward_env(forward_port))
    assert adapter.status()["build"] == EXPECTED
