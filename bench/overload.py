"""Open-loop overload benchmark: the breaker's concurrency cap beside HAProxy's ``maxconn``
in front of the same slow upstream, driven past its capacity at a fixed arrival rate.

The upstream (a separate Python process) answers each request after ``--service`` seconds
and serves any number at once; both proxies cap it at ``--cap`` requests in flight, so the
capacity is ``cap / service`` requests/s. Requests arrive at ``--load`` x that rate whatever
the answers do (open loop: latency counts from each request's scheduled time, so a slow
answer cannot hold the next arrival back). Contestants:

- HAProxy ``default-server maxconn N`` with ``timeout queue``: excess waits in HAProxy's queue
  up to the queue timeout, then 503;
- the breaker with ``P_MAX_REQUESTS=N`` and a queue as long as HAProxy's can be
  (``P_MAX_PENDING``, ``P_QUEUE_TIMEOUT`` = HAProxy's);
- the breaker with ``P_MAX_REQUESTS=N`` and no queue: excess shed at once.

Printed per contestant: admitted requests, rejected share, p50/p99 latency of the admitted.

    python -m bench.overload                 # 5 s at 2x capacity, cap 10, 50 ms service
    python -m bench.overload --load 1.5 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp

from bench.common import ManagedProcess, free_port, print_table
from bench.proxy import Contestant, haproxy, sidecar

UPSTREAM = """
import asyncio, sys
from aiohttp import web

async def handle(request):
    await asyncio.sleep(float(sys.argv[2]))
    return web.Response(text="served")

app = web.Application()
app.router.add_get("/", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


Starter = Callable[[], contextlib.AbstractContextManager[Contestant]]


@dataclass
class Outcome:
    name: str
    admitted: list[float]
    rejected: int
    errors: int

    def row(self) -> list[str]:
        total = len(self.admitted) + self.rejected + self.errors
        latencies = sorted(self.admitted)

        def pct(q: float) -> str:
            if not latencies:
                return "-"
            return f"{latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000:.0f}"

        return [
            self.name,
            str(total),
            str(len(self.admitted)),
            f"{self.rejected / total:.0%}" if total else "-",
            pct(0.5),
            pct(0.99),
            str(self.errors),
        ]


async def drive(name: str, url: str, rate: float, seconds: float) -> Outcome:
    """``rate`` requests/s for ``seconds``, each sent at its scheduled time."""
    outcome = Outcome(name, [], 0, 0)
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(scheduled: float) -> None:
            try:
                async with session.get(url) as response:
                    await response.read()
                    if response.status == 200:
                        outcome.admitted.append(loop.time() - scheduled)
                    elif response.status == 503:
                        outcome.rejected += 1
                    else:
                        outcome.errors += 1
            except aiohttp.ClientError:
                outcome.errors += 1

        tasks = []
        start = loop.time()
        for n in range(int(rate * seconds)):
            scheduled = start + n / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the arrival schedule
            tasks.append(asyncio.ensure_future(one(scheduled)))
        await asyncio.gather(*tasks)
    return outcome


@contextlib.contextmanager
def slow_upstream(service: float) -> Iterator[int]:
    port = free_port()
    argv = [sys.executable, "-c", UPSTREAM, str(port), str(service)]
    with ManagedProcess("slow upstream", argv) as process:
        process.wait_port(port)
        yield port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cap", type=int, default=10)
    parser.add_argument("--service", type=float, default=0.05)
    parser.add_argument("--load", type=float, default=2.0, help="offered load / capacity")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--queue-timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    rate = args.load * args.cap / args.service
    queue_ms = int(args.queue_timeout * 1000)
    outcomes = []
    with slow_upstream(args.service) as upstream_port:
        contestants: list[tuple[str, Starter]] = [
            (
                "haproxy maxconn",
                lambda: haproxy(
                    upstream_port,
                    backend=f"    default-server maxconn {args.cap}\n"
                    f"    timeout queue {queue_ms}ms",
                ),
            ),
            (
                "breaker + queue",
                lambda: sidecar(
                    "breaker",
                    upstream_port,
                    "warn",
                    extra={
                        "BREAKER_MAX_REQUESTS": str(args.cap),
                        "BREAKER_MAX_PENDING": "100000",
                        "BREAKER_QUEUE_TIMEOUT": f"{queue_ms}ms",
                    },
                ),
            ),
            (
                "breaker, no queue",
                lambda: sidecar(
                    "breaker", upstream_port, "warn", extra={"BREAKER_MAX_REQUESTS": str(args.cap)}
                ),
            ),
        ]
        for name, start in contestants:
            with start() as contestant:
                print(f"  {name}: {rate:.0f} req/s for {args.seconds:g} s", flush=True)
                outcomes.append(asyncio.run(drive(name, contestant.url, rate, args.seconds)))
    print(
        f"\n== open loop at {args.load:g}x capacity ({rate:.0f} req/s offered, cap {args.cap}, "
        f"service {args.service * 1000:.0f} ms, queue timeout {queue_ms} ms)"
    )
    print_table(
        ["contestant", "sent", "admitted", "rejected", "p50 ms", "p99 ms", "errors"],
        [outcome.row() for outcome in outcomes],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
