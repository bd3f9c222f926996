"""Build hook for the compiled build: ``SIDECARS_COMPILE=1`` compiles the log adapter's
per-line modules and the proxy engine's per-request modules with mypyc (from the same typed
source; mypy's own compiler, as black and mypy ship). The images and the benchmarks use it;
without the variable (an editable install, the everyday test run) the package is pure Python
and behaves the same.

    SIDECARS_COMPILE=1 pip wheel --no-build-isolation --no-deps .   # needs mypy and a C compiler
    python -m tools.compiled                                        # a compiled copy in build/
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import setup

# One shared library per group (mypyc's ``separate``), at the top level as mypyc's own is:
# mypyc derives a compiled package's ``__path__`` from the library's place, which is right
# only there (a library inside ``sidecars/`` gave ``sidecars.proxy.filters`` a wrong one).
# The log adapter and the proxy never call each other, so two groups cost nothing at run
# time and their C compiles run in parallel; the proxy engine and the policies it consults
# per request share a group, as a call across groups goes through a table and cannot be
# inlined. A literal: tests/integration/logs/test_build.py reads it to check that every
# module listed imports from an extension module in the compiled build.
COMPILED_GROUPS = {
    # What runs for every log line (parsing, normalising, redaction, grouping, line framing).
    "sidecars_logs": [
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
    ],
    # What runs for every request and relayed chunk: the engine's data path, its filters and
    # the policies they consult.
    "sidecars_proxy": [
        "sidecars/policies/balancer.py",
        "sidecars/policies/breaker.py",
        "sidecars/policies/canary.py",
        "sidecars/policies/concurrency.py",
        "sidecars/policies/faults.py",
        "sidecars/policies/outlier.py",
        "sidecars/policies/ratelimit.py",
        "sidecars/policies/retry.py",
        "sidecars/policies/window.py",
        "sidecars/proxy/accesslog.py",
        "sidecars/proxy/batch.py",
        "sidecars/proxy/client.py",
        "sidecars/proxy/cluster.py",
        "sidecars/proxy/connection.py",
        "sidecars/proxy/errors.py",
        "sidecars/proxy/exchange.py",
        "sidecars/proxy/filters/__init__.py",
        "sidecars/proxy/filters/breaker.py",
        "sidecars/proxy/filters/canary.py",
        "sidecars/proxy/filters/concurrency.py",
        "sidecars/proxy/filters/connections.py",
        "sidecars/proxy/filters/faults.py",
        "sidecars/proxy/filters/outlier.py",
        "sidecars/proxy/filters/ratelimit.py",
        "sidecars/proxy/filters/retry.py",
        "sidecars/proxy/headers.py",
        "sidecars/proxy/http1.py",
        "sidecars/proxy/listener.py",
        "sidecars/proxy/metrics.py",
        "sidecars/proxy/pool.py",
        "sidecars/proxy/request.py",
        "sidecars/proxy/route.py",
        "sidecars/proxy/tcp.py",
        "sidecars/proxy/timer.py",
        "sidecars/proxy/upstream.py",
    ],
}
COMPILED_MODULES = [module for modules in COMPILED_GROUPS.values() for module in modules]


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
    groups = [(modules, name) for name, modules in COMPILED_GROUPS.items()]
    return mypycify(COMPILED_MODULES, opt_level="3", separate=groups)


setup(ext_modules=compiled_extensions())
