"""A mixed log corpus, shaped like what a log adapter sees from a fleet of containers.

Events come in realistic proportions (by line): JSON of several shapes (structlog, pino,
bunyan, logrus, zap, ECS, logback), logfmt, nginx combined access logs, plain text lines
(log4j-style, Go ``log``, klog, bare prints), and multi-line groups (Python tracebacks, Java
stack traces with ``Caused by``). The same seed always gives the same corpus.

    python -m bench.corpus /tmp/corpus.log --lines 500000
"""

from __future__ import annotations

import argparse
import datetime
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

Event = list[str]
"""One log event: a single line, or the lines of a multi-line group."""

START = datetime.datetime(2026, 11, 26, 10, 0, 0, tzinfo=datetime.UTC)
SERVICES = ("checkout", "payments", "catalog", "auth", "orders", "search")
PATHS = (
    "/api/orders",
    "/api/orders/{id}",
    "/api/cart",
    "/healthz",
    "/static/app.{id}.js",
    "/api/search?q=shoes&page={id}",
    "/api/users/{id}/profile",
    "/login",
    "/metrics",
)
METHODS = ("GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH")
STATUSES = (200, 200, 200, 200, 200, 200, 201, 204, 301, 304, 400, 401, 404, 404, 500, 502, 503)
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 "
    "Safari/537.36",
    "curl/8.5.0",
    "kube-probe/1.29",
    "Go-http-client/1.1",
    "python-requests/2.31.0",
)
MESSAGES = (
    "request completed",
    "order placed",
    "cache miss for key",
    "payment authorised",
    "user signed in",
    "retrying upstream call",
    "connection pool exhausted, waiting",
    "slow query detected",
    "feature flag evaluated",
    "scheduled job finished",
)
LEVEL_NAMES = ("debug", "info", "info", "info", "info", "info", "warn", "warning", "error")
LEVEL_NUMBERS = (20, 30, 30, 30, 30, 30, 40, 50, 60)


@dataclass
class CorpusStats:
    lines: int = 0
    events: int = 0
    bytes: int = 0
    kinds: Counter[str] = field(default_factory=Counter)


class CorpusGenerator:
    """Draws events with a seeded random source and a clock that moves a few ms per event."""

    def __init__(self, seed: int = 42) -> None:
        self.random = random.Random(seed)
        self.clock = START
        # (weight by events, kind, maker): multi-line groups average ~12 lines, so their event
        # weight is small for them to be ~6% of lines.
        self.kinds: list[tuple[float, str, Callable[[], Event]]] = [
            (10.0, "json-structlog", self.json_structlog),
            (8.0, "json-pino", self.json_pino),
            (4.0, "json-bunyan", self.json_bunyan),
            (6.0, "json-logrus", self.json_logrus),
            (6.0, "json-zap", self.json_zap),
            (5.0, "json-ecs", self.json_ecs),
            (5.0, "json-logback", self.json_logback),
            (12.0, "logfmt", self.logfmt),
            (25.0, "nginx-combined", self.nginx_combined),
            (4.0, "text-log4j", self.text_log4j),
            (3.0, "text-go", self.text_go),
            (2.0, "text-klog", self.text_klog),
            (3.0, "text-plain", self.text_plain),
            (0.3, "python-traceback", self.python_traceback),
            (0.2, "java-stacktrace", self.java_stacktrace),
        ]
        self._weights = [weight for weight, _, _ in self.kinds]

    # --- helpers ---

    def tick(self) -> datetime.datetime:
        self.clock += datetime.timedelta(microseconds=self.random.randint(50, 4000))
        return self.clock

    def iso(self) -> str:
        return self.tick().isoformat(timespec="microseconds").replace("+00:00", "Z")

    def hex_id(self, length: int) -> str:
        return f"{self.random.getrandbits(length * 4):0{length}x}"

    def choice(self, items: tuple[str, ...]) -> str:
        return self.random.choice(items)

    def host_name(self) -> str:
        return f"ip-10-0-{self.random.randint(0, 255)}-{self.random.randint(1, 254)}"

    def path(self) -> str:
        return self.choice(PATHS).replace("{id}", str(self.random.randint(1, 99999)))

    def message(self) -> str:
        text = self.choice(MESSAGES)
        if self.random.random() < 0.02:
            # A secret the default redaction should mask.
            text += f" Authorization: Bearer eyJ{self.hex_id(32)}.{self.hex_id(24)}"
        return text

    @staticmethod
    def dumps(data: dict[str, object]) -> str:
        return orjson.dumps(data).decode()

    # --- single-line kinds ---

    def json_structlog(self) -> Event:
        data: dict[str, object] = {
            "timestamp": self.iso(),
            "level": self.choice(LEVEL_NAMES),
            "event": self.message(),
            "logger": f"{self.choice(SERVICES)}.handlers",
            "request_id": self.hex_id(16),
            "duration_ms": round(self.random.uniform(0.3, 900.0), 2),
        }
        if self.random.random() < 0.5:
            data["trace_id"] = self.hex_id(32)
            data["span_id"] = self.hex_id(16)
        return [self.dumps(data)]

    def json_pino(self) -> Event:
        return [
            self.dumps(
                {
                    "level": self.random.choice(LEVEL_NUMBERS),
                    "time": int(self.tick().timestamp() * 1000),
                    "pid": self.random.randint(1, 300),
                    "hostname": f"{self.choice(SERVICES)}-{self.hex_id(5)}",
                    "req": {
                        "id": self.random.randint(1, 10**6),
                        "method": self.choice(METHODS),
                        "url": self.path(),
                    },
                    "responseTime": self.random.randint(1, 500),
                    "msg": self.message(),
                }
            )
        ]

    def json_bunyan(self) -> Event:
        return [
            self.dumps(
                {
                    "name": self.choice(SERVICES),
                    "hostname": self.host_name(),
                    "pid": self.random.randint(1, 300),
                    "level": self.random.choice(LEVEL_NUMBERS),
                    "msg": self.message(),
                    "time": self.iso(),
                    "v": 0,
                }
            )
        ]

    def json_logrus(self) -> Event:
        return [
            self.dumps(
                {
                    "level": self.choice(LEVEL_NAMES),
                    "msg": self.message(),
                    "time": self.iso(),
                    "component": self.choice(SERVICES),
                    "user_id": self.random.randint(1, 10**7),
                }
            )
        ]

    def json_zap(self) -> Event:
        return [
            self.dumps(
                {
                    "level": self.choice(LEVEL_NAMES),
                    "ts": round(self.tick().timestamp(), 6),
                    "caller": f"server/handler.go:{self.random.randint(10, 900)}",
                    "msg": self.message(),
                    "trace_id": self.hex_id(32),
                    "status": self.random.choice(STATUSES),
                }
            )
        ]

    def json_ecs(self) -> Event:
        return [
            self.dumps(
                {
                    "@timestamp": self.iso(),
                    "log.level": self.choice(LEVEL_NAMES),
                    "message": self.message(),
                    "service.name": self.choice(SERVICES),
                    "trace.id": self.hex_id(32),
                    "transaction.id": self.hex_id(16),
                    "event.dataset": "app.log",
                }
            )
        ]

    def json_logback(self) -> Event:
        level = self.choice(("DEBUG", "INFO", "INFO", "INFO", "WARN", "ERROR"))
        return [
            self.dumps(
                {
                    "@timestamp": self.tick().isoformat(timespec="milliseconds"),
                    "@version": "1",
                    "message": self.message(),
                    "logger_name": "com.example.orders.OrderService",
                    "thread_name": f"http-nio-8080-exec-{self.random.randint(1, 20)}",
                    "level": level,
                    "level_value": {"DEBUG": 10000, "INFO": 20000, "WARN": 30000, "ERROR": 40000}[
                        level
                    ],
                }
            )
        ]

    def logfmt(self) -> Event:
        parts = [
            f"time={self.iso()}",
            f"level={self.choice(LEVEL_NAMES)}",
            f'msg="{self.message()}"',
            f"method={self.choice(METHODS)}",
            f"path={self.path()}",
            f"status={self.random.choice(STATUSES)}",
            f"duration={self.random.randint(1, 900)}ms",
        ]
        if self.random.random() < 0.05:
            parts.append(f"password={self.hex_id(12)}")
        return [" ".join(parts)]

    def nginx_combined(self) -> Event:
        when = self.tick().strftime("%d/%b/%Y:%H:%M:%S +0000")
        address = (
            f"10.{self.random.randint(0, 255)}.{self.random.randint(0, 255)}."
            f"{self.random.randint(1, 254)}"
        )
        return [
            f'{address} - - [{when}] "{self.choice(METHODS)} {self.path()} HTTP/1.1" '
            f"{self.random.choice(STATUSES)} {self.random.randint(0, 60000)} "
            f'"https://shop.example.com/" "{self.choice(AGENTS)}"'
        ]

    def text_log4j(self) -> Event:
        when = self.tick().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        level = self.choice(("DEBUG", "INFO", "INFO", "WARN", "ERROR"))
        return [f"{when} {level:<5} [main] com.example.orders.OrderService - {self.message()}"]

    def text_go(self) -> Event:
        return [f"{self.tick().strftime('%Y/%m/%d %H:%M:%S')} {self.message()}"]

    def text_klog(self) -> Event:
        when = self.tick().strftime("%m%d %H:%M:%S.%f")
        letter = self.choice(("I", "I", "I", "W", "E"))
        return [
            f"{letter}{when}       1 controller.go:{self.random.randint(10, 999)}] {self.message()}"
        ]

    def text_plain(self) -> Event:
        return [
            self.choice(
                (
                    "Starting server on port 8080",
                    "Listening on 0.0.0.0:3000",
                    "Connected to database",
                    "GC pause 12ms",
                    "warning: deprecated configuration key 'timeout', use 'deadline'",
                    "Shutting down gracefully",
                )
            )
        ]

    # --- multi-line groups ---

    def python_traceback(self) -> Event:
        when = self.tick().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        frames = []
        for depth in range(self.random.randint(3, 8)):
            module = self.choice(("handlers", "service", "repository", "client", "db"))
            frames.append(
                f'  File "/app/{module}.py", line {self.random.randint(10, 600)}, '
                f"in {module}_call_{depth}"
            )
            frames.append(f"    result = {module}.do_work(request, timeout=self.timeout)")
        error = self.choice(
            (
                "KeyError: 'customer_id'",
                "ValueError: invalid literal for int()",
                "TimeoutError: upstream did not answer in 2.0s",
                "ConnectionResetError: [Errno 104] Connection reset by peer",
            )
        )
        return [
            f"{when} ERROR [orders.api] unhandled error in request",
            "Traceback (most recent call last):",
            *frames,
            error,
        ]

    def java_stacktrace(self) -> Event:
        def frames(count: int) -> list[str]:
            return [
                f"\tat com.example.{self.choice(('orders', 'payments', 'db'))}."
                f"{self.choice(('Service', 'Repository', 'Client'))}.call"
                f"(Source.java:{self.random.randint(10, 900)})"
                for _ in range(count)
            ]

        lines = [
            f'Exception in thread "http-nio-8080-exec-{self.random.randint(1, 20)}" '
            "java.lang.IllegalStateException: order state is CLOSED",
            *frames(self.random.randint(5, 15)),
        ]
        if self.random.random() < 0.6:
            lines.append(
                "Caused by: java.sql.SQLTransientConnectionException: "
                "HikariPool-1 - Connection is not available"
            )
            lines.extend(frames(self.random.randint(3, 8)))
            lines.append(f"\t... {self.random.randint(10, 40)} more")
        return lines

    # --- the stream ---

    def events(self) -> Iterator[tuple[str, Event]]:
        makers = [(kind, maker) for _, kind, maker in self.kinds]
        while True:
            kind, maker = self.random.choices(makers, self._weights)[0]
            yield kind, maker()


def write_corpus(path: Path, lines: int, seed: int = 42) -> CorpusStats:
    """Write about ``lines`` lines (whole events only) to ``path``; return what was written."""
    stats = CorpusStats()
    chunk: list[str] = []
    with path.open("w", encoding="utf-8") as out:
        for kind, event in CorpusGenerator(seed).events():
            if stats.lines >= lines:
                break
            chunk.extend(event)
            stats.lines += len(event)
            stats.events += 1
            stats.kinds[kind] += len(event)
            if len(chunk) >= 10_000:
                stats.bytes += out.write("\n".join(chunk) + "\n")
                chunk.clear()
        if chunk:
            stats.bytes += out.write("\n".join(chunk) + "\n")
    return stats


def single_line_events(count: int, seed: int = 7) -> list[str]:
    """``count`` one-line events (no multi-line groups): what a Forward client sends per record."""
    found: list[str] = []
    for _, event in CorpusGenerator(seed).events():
        if len(event) == 1:
            found.append(event[0])
            if len(found) == count:
                return found
    raise AssertionError("unreachable: the event stream is endless")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    stats = write_corpus(args.path, args.lines, args.seed)
    print(f"{stats.lines:,} lines, {stats.events:,} events, {stats.bytes / 1e6:.1f} MB")
    for kind, count in stats.kinds.most_common():
        print(f"  {kind:<18} {count / stats.lines:6.1%}")


if __name__ == "__main__":
    main()
