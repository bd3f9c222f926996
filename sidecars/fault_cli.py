"""``sidecars fault``: start, list and end fault drills through a proxy's admin API
(``/faults``), with the token from ``SIDECAR_ADMIN_TOKEN``.

    sidecars fault --admin 127.0.0.1:9902 --abort 503 --percent 30 --for 60s
    sidecars fault --admin 127.0.0.1:9902 --list
    sidecars fault --admin 127.0.0.1:9902 --clear [ID]

Prints the admin API's JSON answer; exits 0 when it succeeded, 1 when refused or
unreachable (2 on a usage error, as argparse does).
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
from typing import Any

import orjson

from sidecars.envparse import HostPort, host_port


def add_parser(commands: Any) -> None:
    fault: argparse.ArgumentParser = commands.add_parser(
        "fault",
        help="start, list or end fault drills through a proxy's admin API",
        description="Start a fault drill (one of --abort, --delay, --reset), list the active "
        "ones (--list) or end them (--clear [ID]) through the admin API of a breaker or an "
        "ambassador; the token is read from SIDECAR_ADMIN_TOKEN. Every drill expires.",
    )
    fault.add_argument(
        "--admin", required=True, type=host_port, metavar="HOST:PORT", help="the admin address"
    )
    what = fault.add_mutually_exclusive_group(required=True)
    what.add_argument("--abort", type=int, metavar="STATUS", help="answer with this status")
    what.add_argument("--delay", metavar="DURATION", help="hold requests this long (250ms)")
    what.add_argument("--reset", action="store_true", help="reset connections")
    what.add_argument("--list", action="store_true", help="list the active drills")
    what.add_argument(
        "--clear", nargs="?", const="", metavar="ID", help="end one drill, or all of them"
    )
    fault.add_argument("--percent", type=float, default=100.0, help="share of requests (100)")
    fault.add_argument(
        "--for", dest="duration", default="60s", metavar="DURATION", help="how long (60s)"
    )
    fault.add_argument("--path-prefix", help="only requests whose path starts so")
    fault.add_argument("--header", metavar="NAME=VALUE", help="only requests with this header")
    fault.add_argument("--scope", choices=("attempt", "request"), help="where the fault acts")


def run(args: argparse.Namespace) -> int:
    if args.list:
        method, path, body = "GET", "/faults", None
    elif args.clear is not None:
        method, path, body = "DELETE", "/faults" + (f"/{args.clear}" if args.clear else ""), None
    else:
        method, path, body = "POST", "/faults", orjson.dumps(_drill(args))
    admin: HostPort = args.admin
    host = "127.0.0.1" if admin.host in ("0.0.0.0", "::") else admin.host
    token = os.environ.get("SIDECAR_ADMIN_TOKEN", "").strip()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection(host, admin.port, timeout=5)
    try:
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        answer = response.read()
    except (OSError, http.client.HTTPException) as error:
        print(f"sidecars fault: {admin}: {error!r}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    out = sys.stdout if response.status < 300 else sys.stderr
    out.write(answer.decode("utf-8", "replace") + "\n")
    return 0 if response.status < 300 else 1


def _drill(args: argparse.Namespace) -> dict[str, Any]:
    drill: dict[str, Any] = {"percent": args.percent, "duration": args.duration}
    if args.abort is not None:
        drill["abort"] = args.abort
    elif args.delay is not None:
        drill["delay"] = args.delay
    else:
        drill["reset"] = True
    if args.path_prefix:
        drill["path_prefix"] = args.path_prefix
    if args.header:
        name, _, value = args.header.partition("=")
        drill["header"] = {"name": name.strip(), "value": value.strip()}
    if args.scope:
        drill["scope"] = args.scope
    return drill
