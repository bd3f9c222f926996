"""Build hook for the compiled build: ``SIDECARS_COMPILE=1`` compiles the log adapter's
per-line modules with mypyc (from the same typed source; mypy's own compiler, as black and
mypy ship). The images and the benchmarks use it; without the variable (an editable install,
the everyday test run) the package is pure Python and behaves the same.

    SIDECARS_COMPILE=1 pip wheel --no-build-isolation --no-deps .   # needs mypy and a C compiler
    python -m tools.compiled                                        # a compiled copy in build/
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import setup

COMPILED_MODULES = [
    "sidecars/logs/cards.py",
    "sidecars/logs/depth.py",
    "sidecars/logs/detect.py",
    "sidecars/logs/formats/__init__.py",
    "sidecars/logs/formats/access.py",
    "sidecars/logs/formats/cri.py",
    "sidecars/logs/formats/docker.py",
    "sidecars/logs/formats/json.py",
    "sidecars/logs/formats/klog.py",
    "sidecars/logs/formats/logfmt.py",
    "sidecars/logs/formats/regex.py",
    "sidecars/logs/formats/syslog.py",
    "sidecars/logs/formats/text.py",
    "sidecars/logs/levels.py",
    "sidecars/logs/multiline.py",
    "sidecars/logs/normalise.py",
    "sidecars/logs/pending.py",
    "sidecars/logs/processor.py",
    "sidecars/logs/redact.py",
    "sidecars/logs/sources/lines.py",
    "sidecars/logs/stacktrace.py",
    "sidecars/logs/timestamps.py",
]
"""What runs for every log line (parsing, normalising, redaction, grouping, line framing)."""


def compiled_extensions() -> list[Any]:
    if os.environ.get("SIDECARS_COMPILE", "") != "1":
        return []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 (only the compiled build needs mypy)
    except ImportError as error:
        raise SystemExit(
            "SIDECARS_COMPILE=1 needs mypy installed where the build runs "
            "(pip install mypy; pip ... --no-build-isolation)"
        ) from error
    # One shared library inside the package (not at the top level of site-packages).
    return mypycify(COMPILED_MODULES, opt_level="3", group_name="sidecars.logs.compiled")


setup(ext_modules=compiled_extensions())
