"""``sidecars <command>``: parse the environment into settings, run, map outcomes to exit codes.

Exit codes: 0 normal (a SIGTERM drain included), 2 configuration error, 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from collections.abc import Sequence
from typing import cast

import orjson

from sidecars import observability, runtime, settings

EXIT_CONFIG = 2
SIDECARS = ("breaker", "ambassador", "log-adapter")


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked
    (importlib.metadata costs ~20 ms, which every start would otherwise pay), and whether
    the log processing is the compiled build."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        import importlib.metadata  # noqa: PLC0415

        try:
            version = importlib.metadata.version("sidecars")
        except importlib.metadata.PackageNotFoundError:  # a source tree, not installed
            version = "unknown"
        from sidecars.logs import build_kind  # noqa: PLC0415

        sys.stdout.write(f"sidecars {version} (log processing: {build_kind()})\n")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecars",
        description="Drop-in sidecars: circuit breaker, retry ambassador, log adapter.",
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    commands.add_parser("breaker", help="circuit-breaker proxy (BREAKER_* variables)")
    commands.add_parser("ambassador", help="outbound retry proxy (AMBASSADOR_* variables)")
    commands.add_parser("log-adapter", help="log-normalising adapter (LOGADAPTER_* variables)")
    demo = commands.add_parser("demo", help="the example stack as local processes")
    demo.add_argument("--duration", type=float, help="run this many seconds, then summarise")
    config = commands.add_parser("config", help="validate the environment, print settings")
    config.add_argument("sidecar", choices=SIDECARS)
    health = commands.add_parser(
        "health", help="exit 0 when a sidecar's /healthz answers (for container HEALTHCHECK)"
    )
    health.add_argument("sidecar", choices=SIDECARS)
    health.add_argument("--ready", action="store_true", help="check /readyz instead")
    return parser


def _load(command: str) -> settings.ProxySettings | settings.LogAdapterSettings | None:
    try:
        return settings.load(cast(settings.SidecarName, command), os.environ)
    except settings.ConfigError as error:
        for problem in error.problems:
            print(f"sidecars {command}: config error: {problem}", file=sys.stderr)
        return None


def _run_sidecar(command: str) -> int:
    loaded = _load(command)
    if loaded is None:
        return EXIT_CONFIG
    if isinstance(loaded, settings.LogAdapterSettings):
        from sidecars.logs.adapter import serve as serve_logs  # noqa: PLC0415

        observability.configure_logging(loaded.common.log_level, sys.stderr)
        observability.expose(observability.LOG_ADAPTER_METRICS)
        log_settings = loaded
        return runtime.run(lambda lifecycle: serve_logs(log_settings, lifecycle))
    from sidecars.proxy.server import serve as serve_proxy  # noqa: PLC0415

    observability.configure_logging(loaded.common.log_level)
    observability.expose(observability.PROXY_METRICS)
    proxy_settings = loaded
    return runtime.run(lambda lifecycle: serve_proxy(proxy_settings, lifecycle))


def _health(command: str, ready: bool) -> int:
    loaded = _load(command)
    if loaded is None:
        return EXIT_CONFIG
    listen = loaded.common.admin_listen
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "::") else listen.host
    url = f"http://{host}:{listen.port}/{'readyz' if ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"sidecars health: {url}: {error}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in SIDECARS:
        return _run_sidecar(args.command)
    if args.command == "config":
        loaded = _load(args.sidecar)
        if loaded is None:
            return EXIT_CONFIG
        data = settings.to_json_dict(loaded)
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    if args.command == "health":
        return _health(args.sidecar, args.ready)
    from sidecars.demo import main as demo_main  # noqa: PLC0415

    return demo_main(args.duration)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
