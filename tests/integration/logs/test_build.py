"""Which build the tests run: the pure-Python package (the everyday run) or the compiled copy
that ``make test-compiled`` builds (``tools.compiled``), where every log and proxy test runs
again. A compiled run in which any module of ``setup.py``'s ``COMPILED_MODULES`` silently fell
back to Python would test less than it claims, and a stray extension module in the working
tree would shadow every edit: both fail here."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import Any

from logadapter_support import StartAdapter, forward_env
from proxy_parts import breaker_env

from sidecars.logs import build_kind, normalise, processor, timestamps
from sidecars.observability import build_kinds

EXPECTED = "compiled" if os.environ.get("SIDECARS_EXPECT_COMPILED") == "1" else "pure Python"
SETUP_PY = Path(__file__).resolve().parents[3] / "setup.py"


def compiled_modules() -> list[str]:
    """``setup.py``'s ``COMPILED_MODULES`` as module names (from its ``COMPILED_GROUPS``
    literal: importing setup.py would run the build)."""
    for node in ast.parse(SETUP_PY.read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "COMPILED_GROUPS":
            groups: dict[str, list[str]] = ast.literal_eval(node.value)
            paths = [path for modules in groups.values() for path in modules]
            return [
                path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
                for path in paths
            ]
    raise AssertionError(f"no COMPILED_GROUPS in {SETUP_PY}")


def test_the_test_process_runs_the_expected_build() -> None:
    assert build_kind() == EXPECTED
    compiled = tuple(EXTENSION_SUFFIXES)
    for module in (processor, normalise, timestamps):
        assert (module.__file__ or "").endswith(compiled) == (EXPECTED == "compiled")


def test_every_module_listed_for_compiling_imports_as_the_expected_build() -> None:
    names = compiled_modules()
    assert "sidecars.proxy.exchange" in names and "sidecars.logs.processor" in names
    files = {name: importlib.import_module(name).__file__ or "" for name in names}
    wrong = sorted(
        name
        for name, file in files.items()
        if file.endswith(tuple(EXTENSION_SUFFIXES)) != (EXPECTED == "compiled")
    )
    assert not wrong, f"not the {EXPECTED} build: {', '.join(f'{n} ({files[n]})' for n in wrong)}"


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
    assert result.stdout.rstrip().endswith(
        f"(log processing: {EXPECTED}; proxy: {EXPECTED})"
    ), result.stdout


def test_each_compiled_group_reports_the_expected_build() -> None:
    """The proxy's group as well as the logs': a build with only one compiled is reported."""
    assert build_kinds() == {"sidecars_logs": EXPECTED, "sidecars_proxy": EXPECTED}


def test_status_names_the_build(adapters: StartAdapter, forward_port: int) -> None:
    adapter = adapters(forward_env(forward_port))
    status = adapter.status()
    assert status["build"] == EXPECTED
    assert status["builds"] == {"sidecars_logs": EXPECTED, "sidecars_proxy": EXPECTED}


async def test_a_proxy_status_names_each_groups_build(upstreams: Any, proxies: Any) -> None:
    upstream = await upstreams()
    proxy = await proxies("breaker", breaker_env(upstream))
    status = await proxy.status()
    assert status["builds"] == {"sidecars_logs": EXPECTED, "sidecars_proxy": EXPECTED}
