"""``sidecars <command>``: parse the environment into settings, run, map outcomes to exit codes.

Exit codes: 0 normal (a SIGTERM drain included), 2 configuration error, 1 anything else.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast

import orjson

from sidecars import fault_cli, observability, runtime, settings

EXIT_CONFIG = 2
SIDECARS = ("breaker", "ambassador", "log-adapter")


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked
    (importlib.metadata costs ~20 ms, which every start would otherwise pay), and whether
    the proxy and the log processing are the compiled build."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        import importlib.metadata  # noqa: PLC0415

        try:
            version = importlib.metadata.version("sidecars")
        except importlib.metadata.PackageNotFoundError:  # a source tree, not installed
            version = "unknown"
        kinds = observability.build_kinds()
        sys.stdout.write(
            f"sidecars {version} (log processing: {kinds['sidecars_logs']}; "
            f"proxy: {kinds['sidecars_proxy']})\n"
        )
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """argparse with the exit status of a usage error settable: ``health`` must exit 1, never
    2 (Docker's HEALTHCHECK reserves 2)."""

    usage_error_status = EXIT_CONFIG

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_error_status, f"{self.prog}: error: {message}\n")


class _VariablesHelp(argparse.Action):
    """``-h``/``--help`` of a subcommand: its usage, then every variable it reads with its
    default, from the settings loader itself (``settings.variables``)."""

    def __init__(
        self, option_strings: Sequence[str], dest: str, variables: Callable[[], str], **_: object
    ) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show this help and exit")
        self.variables = variables

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        sys.stdout.write(parser.format_help() + "\n" + self.variables())
        parser.exit()


def variables_help(command: str) -> str:
    """The variables section of ``sidecars <command> --help``."""
    if command == "demo":
        from sidecars.demo.ports import DEFAULT_BASE_PORT  # noqa: PLC0415

        listed = [("SIDECARS_DEMO_BASE_PORT", str(DEFAULT_BASE_PORT)), ("SIDECARS_DEMO_SPEED", "1")]
    else:
        listed = settings.variables(cast(settings.SidecarName, command))
    width = max(len(name) for name, _ in listed) + 2
    lines = [f"  {name.ljust(width)}{default}" for name, default in listed]
    notes = ["README.md says what each variable does."]
    if command != "demo":
        notes.insert(0, "Durations: 250ms, 2s, 1m; sizes: 64KiB, 1MiB; booleans: on/off.")
    if command in ("breaker", "ambassador"):
        prefix = command.upper()
        notes.insert(
            0,
            f"Each route named in {prefix}_ROUTES reads {prefix}_ROUTE_<NAME>_<VARIABLE>: "
            "UPSTREAM, LISTEN and any policy variable.",
        )
    return "environment variables (default):\n" + "\n".join([*lines, "", *notes]) + "\n"


def _subcommand(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text, add_help=False
    )
    parser.add_argument(
        "-h", "--help", action=_VariablesHelp, variables=lambda: variables_help(name)
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sidecars",
        description="Drop-in sidecars: circuit breaker, retry ambassador, log adapter.",
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    _subcommand(commands, "breaker", "circuit-breaker proxy (BREAKER_* variables)")
    _subcommand(commands, "ambassador", "outbound retry proxy (AMBASSADOR_* variables)")
    _subcommand(commands, "log-adapter", "log-normalising adapter (LOGADAPTER_* variables)")
    demo = _subcommand(commands, "demo", "the example stack as local processes")
    demo.add_argument("--duration", type=float, help="run this many seconds, then summarise")
    same_variables = "It reads the variables that `sidecars <sidecar> --help` lists."
    config = commands.add_parser(
        "config",
        help="validate the environment, print settings",
        description="Validate the environment of a sidecar and print its effective settings as "
        "JSON (secrets masked); exit 0, or 2 with one line per problem. " + same_variables,
    )
    config.add_argument("sidecar", choices=SIDECARS)
    health: _Parser = commands.add_parser(
        "health",
        help="exit 0 when a sidecar's /healthz answers (for container HEALTHCHECK)",
        description="Exit 0 when the sidecar's /healthz (or /readyz) answers 200, else 1, a "
        "configuration error included (never 2, which HEALTHCHECK reserves). " + same_variables,
    )
    health.usage_error_status = 1
    health.add_argument("sidecar", choices=SIDECARS)
    health.add_argument("--ready", action="store_true", help="check /readyz instead")
    fault_cli.add_parser(commands)
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

        observability.configure_logging(command, loaded.common.log_level, sys.stderr)
        observability.expose(observability.LOG_ADAPTER_METRICS)
        log_settings = loaded
        return runtime.run(lambda lifecycle: serve_logs(log_settings, lifecycle))
    from sidecars.proxy.accesslog import close_output, stdout_output  # noqa: PLC0415
    from sidecars.proxy.server import serve as serve_proxy  # noqa: PLC0415

    # One stdout writer for the process log and the access log (accesslog.StdoutWriter).
    stdout = stdout_output(command, loaded.access_log_buffer)
    observability.configure_logging(
        command, loaded.common.log_level, observability.ProcessLogStream(stdout.put, command)
    )
    observability.expose(observability.PROXY_METRICS)
    proxy_settings = loaded
    code = runtime.run(lambda lifecycle: serve_proxy(proxy_settings, lifecycle))
    # The proxy closed it on a normal stop (the last lines, "stopped", written at once since);
    # after a fatal error this writes what waits, the "fatal" line included.
    if not stdout.closing:
        close_output(stdout, None, command)
    return code


def _health(command: str, ready: bool) -> int:
    """Exit 0 when the sidecar answers; 1 on any failure, a configuration error included
    (Docker's HEALTHCHECK reserves 2)."""
    loaded = _load(command)
    if loaded is None:
        return 1
    listen = loaded.common.admin_listen
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "::") else listen.host
    url = f"http://{host}:{listen.port}/{'readyz' if ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 0 if response.status == 200 else 1
    except (OSError, http.client.HTTPException) as error:  # refused, timed out, not HTTP
        print(f"sidecars health: {url}: {error!r}", file=sys.stderr)
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
    if args.command == "fault":
        return fault_cli.run(args)
    from sidecars.demo import main as demo_main  # noqa: PLC0415

    return demo_main(args.duration)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
