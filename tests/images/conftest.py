import os
import sys
import time
from pathlib import Path

import pytest

# engine.py, next to this file.
sys.path.insert(0, str(Path(__file__).parent))

import engine

ENABLED = os.environ.get("SIDECARS_IMAGES_TEST") == "1"
_figures: list[str] = []


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """Every target built (the base first); target -> build seconds."""
    if not ENABLED:
        pytest.skip("builds and runs the images: make images-test (SIDECARS_IMAGES_TEST=1)")
    missing = engine.available()
    if missing is not None:
        pytest.skip(missing)
    started = time.monotonic()
    base = engine.ensure_base()
    _figures.append(f"base {engine.BASE_IMAGE}: {base}, {time.monotonic() - started:.0f} s")
    config_dir = tmp_path_factory.mktemp("build-config")
    seconds = {target: engine.build(target, config_dir) for target in engine.TARGETS}
    for target, took in seconds.items():
        size = engine.size_mb(target)
        _figures.append(f"{target:16} built in {took:5.0f} s, {size:6.1f} MB")
    return seconds


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _figures:
        terminalreporter.section("images")
        for line in _figures:
            terminalreporter.write_line(line)
