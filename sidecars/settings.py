"""Environment -> frozen settings objects, parsed once at start-up.

Every problem is collected and reported together (``ConfigError``); nothing else in the package
reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from sidecars import envparse as p
from sidecars.envparse import ConfigError, EnvReader, HostPort
from sidecars.policies import faults
from sidecars.policies.balancer import BALANCERS
from sidecars.policies.faults import Fault
from sidecars.policies.outlier import OutlierSettings

SidecarName = Literal["breaker", "ambassador", "log-adapter"]
LOG_LEVELS = ("debug", "info", "warn", "error")
RETRY_KINDS = frozenset({"connect-failure", "reset", "timeout"})
DEFAULT_RETRY_ON = "connect-failure,reset,timeout,502,503,504"

__all__ = [
    "BreakerSettings",
    "CanarySettings",
    "ClusterSettings",
    "CommonSettings",
    "ConfigError",
    "FaultSettings",
    "HostPort",
    "LogAdapterSettings",
    "OutlierSettings",
    "ProxySettings",
    "RetryOn",
    "RetrySettings",
    "RouteSettings",
    "UnixAddress",
    "Upstream",
    "load",
    "to_json_dict",
]


@dataclass(frozen=True, slots=True)
class CommonSettings:
    log_level: str
    admin_listen: HostPort
    admin_token: str | None
    drain_timeout: float


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a route sends traffic: ``http(s)://host[:port][/prefix]`` or ``tcp://host:port``."""

    scheme: str
    host: str
    port: int
    path_prefix: str
    also: tuple[Upstream, ...] = ()  # the further URLs of a comma list (one cluster)

    @property
    def urls(self) -> tuple[Upstream, ...]:
        """Every URL of the cluster, this one first."""
        return (self, *self.also)

    @property
    def srv(self) -> bool:
        """An SRV name (``_service._proto.name``, no port): endpoints from its SRV records,
        recognised as HAProxy does."""
        labels = self.host.split(".")
        return len(labels) > 2 and labels[0].startswith("_") and labels[1].startswith("_")

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        default = {"http": 80, "https": 443}.get(self.scheme)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return ",".join(f"{url.scheme}://{url.authority}{url.path_prefix}" for url in self.urls)


def upstream_cluster(raw: str) -> Upstream:
    """One URL, or a comma list of URLs of one scheme (a cluster of endpoints)."""
    urls = [upstream_url(item) for item in p.strict_comma_list(raw)]
    if not urls:
        raise ValueError("a URL http://host:port[/prefix], https://host[:port] or tcp://host:port")
    first = urls[0]
    if any(url.scheme != first.scheme for url in urls):
        raise ValueError("a comma list of URLs of one scheme")
    if any(url.path_prefix != first.path_prefix for url in urls):
        raise ValueError("a comma list of URLs with one path prefix")
    return dataclasses.replace(first, also=tuple(urls[1:]))


def upstream_url(raw: str) -> Upstream:
    text = raw.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(
            "a URL http://host:port[/prefix], https://host[:port] or tcp://host:port"
        ) from None
    if parts.scheme not in ("http", "https", "tcp") or not parts.hostname:
        raise ValueError("a URL http://host:port[/prefix], https://host[:port] or tcp://host:port")
    if parts.username or parts.query or parts.fragment:
        raise ValueError("a URL without credentials, query or fragment")
    srv = parts.hostname.startswith("_") and ("._" in parts.hostname)
    if parts.scheme == "tcp" and ((port is None and not srv) or parts.path not in ("", "/")):
        raise ValueError("tcp://host:port with a port and no path")
    if port == 0:
        raise ValueError("a URL with a port from 1 to 65535")
    default_port = {"http": 80, "https": 443}.get(parts.scheme, 0)
    prefix = parts.path.rstrip("/")
    upstream = Upstream(parts.scheme, parts.hostname, port or default_port, prefix)
    if upstream.srv and port is not None:
        raise ValueError(
            "an SRV name (_service._proto.name) without a port: its ports come from DNS"
        )
    return upstream


@dataclass(frozen=True, slots=True)
class RetryOn:
    """What is retried: failure kinds (connect-failure, reset, timeout) and statuses."""

    kinds: frozenset[str]
    statuses: frozenset[int]

    def __str__(self) -> str:
        return ",".join([*sorted(self.kinds), *map(str, sorted(self.statuses))])


def retry_on(raw: str) -> RetryOn:
    kinds: set[str] = set()
    statuses: set[int] = set()
    for item in p.comma_list(raw):
        if item in RETRY_KINDS:
            kinds.add(item)
        elif item.isdigit() and 100 <= int(item) <= 599:
            statuses.add(int(item))
        elif item == "5xx":
            statuses.update(range(500, 600))
        else:
            raise ValueError("a comma list of connect-failure, reset, timeout, 5xx and statuses")
    return RetryOn(frozenset(kinds), frozenset(statuses))


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    enabled: bool
    failure_threshold: int
    failure_ratio: float | None
    window: float
    min_requests: int
    open_seconds: float
    half_open_requests: int
    failure_statuses: frozenset[int]
    slow_call: float | None
    state_redis_url: str | None


@dataclass(frozen=True, slots=True)
class RetrySettings:
    max_attempts: int
    backoff_base: float
    backoff_max: float
    retry_on: RetryOn
    retry_non_idempotent: bool
    budget_ratio: float
    budget_min_per_second: float
    max_retry_body: int


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """How a route balances over its endpoints, ejects the failing ones and checks them."""

    lb: str
    outlier: OutlierSettings
    health_check_path: str | None
    health_check_interval: float
    health_check_timeout: float
    healthy_threshold: int
    unhealthy_threshold: int

    @property
    def health_checks(self) -> bool:
        return self.health_check_path is not None


# -- fault injection (P_FAULT_*) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Faults injected on a route: from the environment (drills come at run time)."""

    abort: Fault | None = None
    delay: Fault | None = None
    reset: Fault | None = None
    scope: str = "attempt"
    headers: bool = False


def _fault_settings(reader: EnvReader, inherited: FaultSettings | None) -> FaultSettings:
    base = inherited if inherited is not None else FaultSettings()
    return FaultSettings(
        abort=reader.get("FAULT_ABORT", faults.parse_abort, base.abort),
        delay=reader.get("FAULT_DELAY", faults.parse_delay, base.delay),
        reset=reader.get("FAULT_RESET", faults.parse_reset, base.reset),
        scope=reader.get("FAULT_SCOPE", p.choice(*faults.SCOPES), base.scope),
        headers=reader.get("FAULT_HEADERS", p.boolean, base.headers),
    )


# -- end of fault injection ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanarySettings:
    """A second cluster for the new version, and how requests are split and moved to it."""

    upstream: Upstream
    weight: int
    steps: tuple[int, ...]
    interval: float
    min_requests: int
    max_failure_ratio: float
    header: str | None


def canary_steps(raw: str) -> tuple[int, ...]:
    """``5,25,50,100``: rising weights from 1 to 100."""
    problem = "rising weights from 1 to 100, e.g. 5,25,50,100"
    try:
        steps = tuple(int(part) for part in p.comma_list(raw))
    except ValueError:
        raise ValueError(problem) from None
    if not steps or any(not 0 < step <= 100 for step in steps) or list(steps) != sorted(set(steps)):
        raise ValueError(problem)
    return steps


# -- overload protection (issue 14) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``P_RATE_LIMIT``: ``count`` requests per ``per`` seconds."""

    count: int
    per: float

    @property
    def per_second(self) -> float:
        return self.count / self.per

    def __str__(self) -> str:
        return f"{self.count}/{'s' if self.per == 1.0 else 'm'}"


def rate_limit(raw: str) -> RateLimit:
    """``100/s`` or ``6000/m``."""
    count, _, unit = raw.strip().partition("/")
    per = {"s": 1.0, "m": 60.0}.get(unit.strip())
    if per is None or not count.strip().isdigit() or int(count) < 1:
        raise ValueError("a rate: N/s or N/m, e.g. 100/s")
    return RateLimit(int(count), per)


def max_requests(raw: str) -> int | Literal["adaptive"]:
    """``P_MAX_REQUESTS``: a count, or ``adaptive`` (the limit follows measured latency)."""
    if raw.strip().lower() == "adaptive":
        return "adaptive"
    try:
        return p.int_range(1, 1_000_000)(raw)
    except ValueError:
        raise ValueError("a count of requests (1 or more), or adaptive") from None


@dataclass(frozen=True, slots=True)
class OverloadSettings:
    """Concurrency caps, the queue, the adaptive limit and the rate limit of one route."""

    max_requests: int | Literal["adaptive"] | None  # None: no cap
    adaptive_min_limit: int
    adaptive_max_limit: int
    max_pending: int
    queue_timeout: float
    max_active_retries: int | None
    max_connections: int | None
    rate_limit: RateLimit | None
    rate_limit_burst: int | None  # None: one second's worth
    rate_limit_redis_url: str | None

    @property
    def adaptive(self) -> bool:
        return self.max_requests == "adaptive"

    @property
    def burst(self) -> int:
        if self.rate_limit_burst is not None:
            return self.rate_limit_burst
        assert self.rate_limit is not None
        return max(1, round(self.rate_limit.per_second))


def _overload_settings(reader: EnvReader, inherit: Any) -> OverloadSettings:
    settings = OverloadSettings(
        max_requests=reader.get(
            "MAX_REQUESTS", max_requests, inherit("overload.max_requests", None)
        ),
        adaptive_min_limit=reader.get(
            "ADAPTIVE_MIN_LIMIT",
            p.int_range(1, 1_000_000),
            inherit("overload.adaptive_min_limit", 3),
        ),
        adaptive_max_limit=reader.get(
            "ADAPTIVE_MAX_LIMIT",
            p.int_range(1, 1_000_000),
            inherit("overload.adaptive_max_limit", 1000),
        ),
        max_pending=reader.get(
            "MAX_PENDING", p.int_range(0, 1_000_000), inherit("overload.max_pending", 0)
        ),
        queue_timeout=reader.get(
            "QUEUE_TIMEOUT", p.positive_duration, inherit("overload.queue_timeout", 1.0)
        ),
        max_active_retries=reader.get(
            "MAX_ACTIVE_RETRIES",
            p.int_range(0, 1_000_000),
            inherit("overload.max_active_retries", None),
        ),
        max_connections=reader.get(
            "MAX_CONNECTIONS",
            p.int_range(1, 1_000_000),
            inherit("overload.max_connections", None),
        ),
        rate_limit=reader.get("RATE_LIMIT", rate_limit, inherit("overload.rate_limit", None)),
        rate_limit_burst=reader.get(
            "RATE_LIMIT_BURST",
            p.int_range(1, 100_000_000),
            inherit("overload.rate_limit_burst", None),
        ),
        rate_limit_redis_url=reader.get(
            "RATE_LIMIT_REDIS_URL", p.redis_url, inherit("overload.rate_limit_redis_url", None)
        ),
    )
    if settings.adaptive_max_limit < settings.adaptive_min_limit:
        reader.problems.append(
            f"{reader.prefix}ADAPTIVE_MAX_LIMIT={settings.adaptive_max_limit} is below "
            f"{reader.prefix}ADAPTIVE_MIN_LIMIT={settings.adaptive_min_limit}"
        )
    if settings.rate_limit is None and (
        settings.rate_limit_burst is not None or settings.rate_limit_redis_url is not None
    ):
        reader.problems.append(
            f"{reader.prefix}RATE_LIMIT_BURST and {reader.prefix}RATE_LIMIT_REDIS_URL "
            f"need {reader.prefix}RATE_LIMIT (e.g. 100/s)"
        )
    return settings


# -- end of overload protection ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """One listener and the upstream behind it, with its own policies."""

    name: str
    listen: HostPort
    upstream: Upstream
    protocol: str
    fallback: Upstream | None
    connect_timeout: float
    timeout: float
    per_try_timeout: float | None
    upstream_ca_file: str | None
    breaker: BreakerSettings
    retry: RetrySettings
    cluster: ClusterSettings
    overload: OverloadSettings
    faults: FaultSettings = FaultSettings()
    canary: CanarySettings | None = None


@dataclass(frozen=True, slots=True)
class ProxySettings:
    sidecar: SidecarName
    common: CommonSettings
    routes: tuple[RouteSettings, ...]
    max_header_size: int
    max_body: int | None
    header_timeout: float
    idle_timeout: float
    upstream_idle_timeout: float
    upstream_max_idle: int
    dns_ttl: float
    dns_servers: tuple[HostPort, ...] = ()
    access_log: bool = True
    access_log_buffer: int = 64 * 1024  # written when this much is buffered...
    access_log_flush: float = 0.1  # ... or this long after the first buffered line
    trace_context: bool = True  # W3C traceparent/tracestate propagated, ids in access lines


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A Unix socket to listen on (``unix:///var/run/fluent.sock``, as FireLens uses)."""

    path: str

    def __str__(self) -> str:
        return f"unix://{self.path}"


def listen_address(raw: str) -> HostPort | UnixAddress:
    """``host:port``, or ``unix:///absolute/path`` for a Unix socket."""
    text = raw.strip()
    if text.startswith("unix://"):
        path = text[len("unix://") :]
        if not path.startswith("/") or path == "/" or "\0" in path:
            raise ValueError("unix:///absolute/path/to/socket, or host:port")
        return UnixAddress(path)
    try:
        return p.host_port(text)
    except ValueError:
        raise ValueError(
            "host:port, e.g. 0.0.0.0:24224 (port 0-65535), or unix:///path/to/socket"
        ) from None


_DEFAULT_FORWARD_LISTEN: HostPort | UnixAddress = p.host_port("0.0.0.0:24224")


@dataclass(frozen=True, slots=True)
class LogAdapterSettings:
    common: CommonSettings
    inputs: tuple[str, ...]
    forward_listen: HostPort | UnixAddress
    forward_shared_key: str | None
    tail_paths: tuple[str, ...]
    syslog_listen: HostPort
    outputs: tuple[str, ...]
    service: str | None
    format: str
    multiline: bool
    multiline_timeout: float
    multiline_max_bytes: int
    max_line_bytes: int
    redact: str
    buffer_dir: str | None
    buffer_max: int
    state_dir: str | None
    ecs_metadata_uri: str | None
    remote: RemoteOutputSettings
    # Bounds against hostile input (``_input_bounds``).
    line_hard_cap: int = 8 * 1024 * 1024
    forward_handshake_timeout: float = 10.0
    forward_idle_timeout: float | None = None


# --- the log adapter's remote outputs (cloudwatch://, otlp+http(s)://, http(s)://) and EMF ------

CLOUDWATCH_STREAM_DEFAULT = "{service}/{container_id}"
_OUTPUT_PATTERNS = (
    r"stdout",
    r"forward://[^/:]+:\d+",
    r"file:///.+",
    r"cloudwatch://[A-Za-z0-9_.#/-]{1,512}",
    r"(otlp\+)?https?://[^/@\s]+(/\S*)?",
)
_OUTPUT_FORMS = (
    "stdout, forward://host:port, file:///path, cloudwatch://<log-group>, "
    "otlp+http(s)://host:port[/path] or http(s)://host[:port]/path (no credentials in the URL)"
)
_EXTRAS = (  # output prefix, its extra, the modules that extra brings
    ("cloudwatch://", "cloudwatch", ("botocore",)),
    ("otlp+", "otlp", ("opentelemetry.proto", "aiohttp")),
    ("http", "http", ("aiohttp",)),
)


@dataclass(frozen=True, slots=True)
class RemoteOutputSettings:
    cloudwatch_stream: str
    cloudwatch_region: str | None
    cloudwatch_endpoint: str | None
    cloudwatch_create: bool
    cloudwatch_retention_days: int | None
    otlp_encoding: str
    otlp_compression: str
    otlp_headers: tuple[tuple[str, str], ...]
    otlp_sigv4: str | None
    http_compression: str
    http_headers: tuple[tuple[str, str], ...]
    emf_namespace: str | None
    emf_output: str | None


# The retention periods PutRetentionPolicy accepts.
_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                   2192, 2557, 2922, 3288, 3653)


def header_list(raw: str) -> tuple[tuple[str, str], ...]:
    """``name=value`` comma list (as ``OTEL_EXPORTER_OTLP_HEADERS``; values may be %-encoded)."""
    headers: list[tuple[str, str]] = []
    for item in p.comma_list(raw):
        name, equals, value = item.partition("=")
        if not equals or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name.strip()):
            raise ValueError("a comma list of name=value")
        headers.append((name.strip(), unquote(value.strip())))
    return tuple(headers)


STREAM_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")
"""A placeholder of ``LOGADAPTER_CLOUDWATCH_STREAM``: a record field, dotted for nested ones."""


def stream_template(raw: str) -> str:
    text = raw.strip()
    if "{" in STREAM_FIELD.sub("", text) or "}" in STREAM_FIELD.sub("", text):
        raise ValueError("a template of record fields such as {service}/{container_id}")
    return text


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):  # its parent package is missing; or hidden
        return False


def _check_output(reader: EnvReader, output: str, variable: str = "LOGADAPTER_OUTPUTS") -> None:
    if not any(re.fullmatch(pattern, output) for pattern in _OUTPUT_PATTERNS):
        reader.fail(variable, output, _OUTPUT_FORMS)
        return
    for prefix, extra, modules in _EXTRAS:
        if output.startswith(prefix) and not all(map(_installed, modules)):
            reader.problems.append(
                f"{variable} has {output}: that output needs the '{extra}' extra "
                f"(pip install 'sidecars[{extra}]'), which is not installed"
            )


def _remote_outputs(
    reader: EnvReader, env: Mapping[str, str], outputs: tuple[str, ...]
) -> RemoteOutputSettings:
    emf_namespace = reader.get("EMF_NAMESPACE", str.strip)
    emf_output = reader.get("EMF_OUTPUT", str.strip)
    if emf_output is not None:
        _check_output(reader, emf_output, "LOGADAPTER_EMF_OUTPUT")
    elif emf_namespace is not None:
        emf_output = next((out for out in outputs if out.startswith("cloudwatch://")), "stdout")
    region = reader.get("CLOUDWATCH_REGION", str.strip) or (
        env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    )
    sigv4 = reader.get("OTLP_SIGV4", p.choice("logs", "xray", "aps", "osis"))
    if region is None and (
        sigv4 is not None
        or any(output.startswith("cloudwatch://") for output in (*outputs, emf_output or ""))
    ):
        reader.problems.append(
            "LOGADAPTER_CLOUDWATCH_REGION is required with a cloudwatch:// output or "
            "LOGADAPTER_OTLP_SIGV4 (or AWS_REGION / AWS_DEFAULT_REGION): e.g. eu-west-1"
        )
    if sigv4 is not None and not _installed("botocore"):
        reader.problems.append(
            "LOGADAPTER_OTLP_SIGV4 needs the 'cloudwatch' extra (pip install "
            "'sidecars[cloudwatch]'), which is not installed"
        )
    retention = reader.get("CLOUDWATCH_RETENTION_DAYS", p.int_range(1))
    if retention is not None and retention not in _RETENTION_DAYS:
        reader.fail(
            "LOGADAPTER_CLOUDWATCH_RETENTION_DAYS",
            str(retention),
            "one of " + ", ".join(map(str, _RETENTION_DAYS)),
        )
    compression = p.choice("gzip", "none")
    return RemoteOutputSettings(
        cloudwatch_stream=reader.get(
            "CLOUDWATCH_STREAM", stream_template, CLOUDWATCH_STREAM_DEFAULT
        ),
        cloudwatch_region=region,
        cloudwatch_endpoint=reader.get("CLOUDWATCH_ENDPOINT", str.strip),
        cloudwatch_create=reader.get("CLOUDWATCH_CREATE", p.boolean, False),
        cloudwatch_retention_days=retention,
        otlp_encoding=reader.get("OTLP_ENCODING", p.choice("protobuf", "json"), "protobuf"),
        otlp_compression=reader.get("OTLP_COMPRESSION", compression, "gzip"),
        otlp_headers=reader.get("OTLP_HEADERS", header_list, ()),
        otlp_sigv4=sigv4,
        http_compression=reader.get("HTTP_COMPRESSION", compression, "none"),
        http_headers=reader.get("HTTP_HEADERS", header_list, ()),
        emf_namespace=emf_namespace,
        emf_output=emf_output,
    )


@dataclass(frozen=True, slots=True)
class _ProxyPreset:
    """What differs between the breaker and the ambassador: only defaults."""

    listen: str
    admin_listen: str
    max_attempts: int


_PROXY_PRESETS = {
    "breaker": _ProxyPreset("127.0.0.1:15001", "0.0.0.0:9901", max_attempts=1),
    "ambassador": _ProxyPreset("127.0.0.1:15002", "0.0.0.0:9902", max_attempts=3),
}


def _common(env: Mapping[str, str], reader: EnvReader, admin_default: str) -> CommonSettings:
    common = EnvReader(env, "SIDECAR_")
    settings = CommonSettings(
        log_level=common.get("LOG_LEVEL", p.choice(*LOG_LEVELS), "info"),
        admin_listen=reader.get("ADMIN_LISTEN", p.host_port, p.host_port(admin_default)),
        admin_token=common.get("ADMIN_TOKEN", str.strip),
        drain_timeout=common.get("DRAIN_TIMEOUT", p.duration, 20.0),
    )
    common.reject_unknown()  # SIDECAR_DRAIN_TIMOUT must not pass unnoticed either
    reader.problems.extend(common.problems)
    reader.defaults.update(common.defaults)
    return settings


def _route_settings(
    reader: EnvReader,
    parent: RouteSettings | None,
    name: str,
    listen_default: str,
    max_attempts: int,
) -> RouteSettings | None:
    """Read one route's settings; a route under ``ROUTE_<NAME>_`` inherits the top level."""

    def inherit(field: str, fallback: Any) -> Any:
        if parent is None:
            return fallback
        holder: Any = parent
        for part in field.split("."):
            holder = getattr(holder, part)
        return holder

    upstream = reader.require(
        "UPSTREAM", upstream_cluster, "the upstream URL, e.g. http://payments:8080"
    )
    protocol = reader.get("PROTOCOL", p.choice("http", "tcp"), inherit("protocol", "http"))
    breaker = BreakerSettings(
        enabled=reader.get("BREAKER", p.boolean, inherit("breaker.enabled", True)),
        failure_threshold=reader.get(
            "FAILURE_THRESHOLD", p.int_range(1), inherit("breaker.failure_threshold", 5)
        ),
        failure_ratio=reader.get(
            "FAILURE_RATIO",
            p.float_range(0.0, 1.0, low_open=True),
            inherit("breaker.failure_ratio", None),
        ),
        window=reader.get("WINDOW", p.positive_duration, inherit("breaker.window", 10.0)),
        min_requests=reader.get(
            "MIN_REQUESTS", p.int_range(1), inherit("breaker.min_requests", 20)
        ),
        open_seconds=reader.get(
            "OPEN_SECONDS", p.positive_duration, inherit("breaker.open_seconds", 30.0)
        ),
        half_open_requests=reader.get(
            "HALF_OPEN_REQUESTS", p.int_range(1), inherit("breaker.half_open_requests", 1)
        ),
        failure_statuses=reader.get(
            "FAILURE_STATUSES",
            p.status_set,
            inherit("breaker.failure_statuses", frozenset(range(500, 600))),
        ),
        slow_call=reader.get(
            "SLOW_CALL", p.positive_duration, inherit("breaker.slow_call", None)
        ),
        state_redis_url=reader.get(
            "STATE_REDIS_URL", p.redis_url, inherit("breaker.state_redis_url", None)
        ),
    )
    retry = RetrySettings(
        max_attempts=reader.get(
            "MAX_ATTEMPTS", p.int_range(1, 10), inherit("retry.max_attempts", max_attempts)
        ),
        backoff_base=reader.get(
            "BACKOFF_BASE", p.duration, inherit("retry.backoff_base", 0.025)
        ),
        backoff_max=reader.get("BACKOFF_MAX", p.duration, inherit("retry.backoff_max", 0.25)),
        retry_on=reader.get(
            "RETRY_ON", retry_on, inherit("retry.retry_on", retry_on(DEFAULT_RETRY_ON))
        ),
        retry_non_idempotent=reader.get(
            "RETRY_NON_IDEMPOTENT", p.boolean, inherit("retry.retry_non_idempotent", False)
        ),
        budget_ratio=reader.get(
            "RETRY_BUDGET_RATIO", p.float_range(0.0, 10.0), inherit("retry.budget_ratio", 0.2)
        ),
        budget_min_per_second=reader.get(
            "RETRY_BUDGET_MIN_PER_SECOND",
            p.float_range(0.0, 1e6),
            inherit("retry.budget_min_per_second", 10.0),
        ),
        max_retry_body=reader.get(
            "MAX_RETRY_BODY", p.size, inherit("retry.max_retry_body", 1024 * 1024)
        ),
    )
    listen = reader.get("LISTEN", p.host_port, p.host_port(listen_default))
    fallback = reader.get("FALLBACK_UPSTREAM", upstream_cluster)
    cluster = ClusterSettings(
        lb=reader.get("LB", p.choice(*BALANCERS), inherit("cluster.lb", "least-request")),
        outlier=OutlierSettings(
            consecutive_failures=reader.get(
                "OUTLIER_CONSECUTIVE_FAILURES",
                p.int_range(0, 1000),
                inherit("cluster.outlier.consecutive_failures", 5),
            ),
            base_ejection=reader.get(
                "OUTLIER_BASE_EJECTION",
                p.positive_duration,
                inherit("cluster.outlier.base_ejection", 30.0),
            ),
            max_ejection=reader.get(
                "OUTLIER_MAX_EJECTION",
                p.positive_duration,
                inherit("cluster.outlier.max_ejection", 300.0),
            ),
            max_ejected_percent=reader.get(
                "OUTLIER_MAX_EJECTED_PERCENT",
                p.int_range(0, 100),
                inherit("cluster.outlier.max_ejected_percent", 50),
            ),
        ),
        health_check_path=reader.get(
            "HEALTH_CHECK_PATH", _health_check_path, inherit("cluster.health_check_path", None)
        ),
        health_check_interval=reader.get(
            "HEALTH_CHECK_INTERVAL",
            p.positive_duration,
            inherit("cluster.health_check_interval", 5.0),
        ),
        health_check_timeout=reader.get(
            "HEALTH_CHECK_TIMEOUT",
            p.positive_duration,
            inherit("cluster.health_check_timeout", 1.0),
        ),
        healthy_threshold=reader.get(
            "HEALTHY_THRESHOLD", p.int_range(1, 100), inherit("cluster.healthy_threshold", 2)
        ),
        unhealthy_threshold=reader.get(
            "UNHEALTHY_THRESHOLD",
            p.int_range(1, 100),
            inherit("cluster.unhealthy_threshold", 3),
        ),
    )
    connect_timeout = reader.get(
        "CONNECT_TIMEOUT", p.positive_duration, inherit("connect_timeout", 2.0)
    )
    timeout = reader.get("TIMEOUT", p.positive_duration, inherit("timeout", 30.0))
    per_try = reader.get(
        "PER_TRY_TIMEOUT", p.positive_duration, inherit("per_try_timeout", None)
    )
    overload = _overload_settings(reader, inherit)
    ca_file = reader.get("UPSTREAM_CA_FILE", str.strip, inherit("upstream_ca_file", None))
    route_name: str = reader.get("NAME", str.strip, name)
    faults = _fault_settings(reader, parent.faults if parent is not None else None)
    canary = _canary_settings(reader, protocol)
    if upstream is None:
        return None
    if protocol == "tcp" and upstream.scheme != "tcp":
        reader.problems.append(
            f"{reader.prefix}UPSTREAM={upstream} does not fit {reader.prefix}PROTOCOL=tcp: "
            "expected tcp://host:port"
        )
    if protocol == "http" and upstream.scheme == "tcp":
        reader.problems.append(
            f"{reader.prefix}UPSTREAM={upstream} is a tcp:// URL: "
            f"set {reader.prefix}PROTOCOL=tcp, or use http:// or https://"
        )
    if fallback is not None and (fallback.scheme == "tcp") != (protocol == "tcp"):
        reader.problems.append(
            f"{reader.prefix}FALLBACK_UPSTREAM={fallback} must use the same protocol as "
            f"{reader.prefix}UPSTREAM"
        )
    if retry.backoff_max < retry.backoff_base:
        reader.problems.append(
            f"{reader.prefix}BACKOFF_MAX={retry.backoff_max:g}s is below "
            f"{reader.prefix}BACKOFF_BASE={retry.backoff_base:g}s: expected max >= base"
        )
    if per_try is not None and per_try > timeout:
        reader.problems.append(
            f"{reader.prefix}PER_TRY_TIMEOUT={per_try:g}s is above "
            f"{reader.prefix}TIMEOUT={timeout:g}s: expected per-try <= overall deadline"
        )
    return RouteSettings(
        name=route_name or upstream.host,
        listen=listen,
        upstream=upstream,
        protocol=protocol,
        fallback=fallback,
        connect_timeout=connect_timeout,
        timeout=timeout,
        per_try_timeout=per_try,
        upstream_ca_file=ca_file,
        breaker=breaker,
        retry=retry,
        cluster=cluster,
        overload=overload,
        faults=faults,
        canary=canary,
    )


def _canary_settings(reader: EnvReader, protocol: str) -> CanarySettings | None:
    """The P_CANARY_* block (None without P_CANARY_UPSTREAM); a route's own upstream only."""
    upstream = reader.get("CANARY_UPSTREAM", upstream_cluster)
    weight = reader.get("CANARY_WEIGHT", p.int_range(0, 100), 0)
    steps = reader.get("CANARY_STEPS", canary_steps, None) or ()
    interval = reader.get("CANARY_INTERVAL", p.positive_duration, 60.0)
    min_requests = reader.get("CANARY_MIN_REQUESTS", p.int_range(1), 100)
    max_ratio = reader.get("CANARY_MAX_FAILURE_RATIO", p.float_range(0.0, 1.0), 0.05)
    header = reader.get("CANARY_HEADER", str.strip, None)
    if upstream is None:
        return None
    if protocol != "http" or upstream.scheme == "tcp":
        reader.problems.append(
            f"{reader.prefix}CANARY_UPSTREAM={upstream}: canary routing is for HTTP routes"
        )
    return CanarySettings(
        upstream=upstream,
        weight=weight,
        steps=steps,
        interval=interval,
        min_requests=min_requests,
        max_failure_ratio=max_ratio,
        header=header.lower() if header else None,
    )


def _health_check_path(raw: str) -> str:
    """``/healthz``; for a TCP route any value turns on checks by connecting."""
    text = raw.strip()
    if not text.startswith("/") or "#" in text or any(c.isspace() for c in text):
        raise ValueError("a path starting with /, e.g. /healthz (no fragment)")
    return text


def _dns_servers(raw: str) -> tuple[HostPort, ...]:
    servers: list[HostPort] = []
    for item in p.strict_comma_list(raw):
        try:
            address = p.host_port(item if ":" in item.strip("[]") or "]:" in item else item + ":53")
            ipaddress.ip_address(address.host)
        except ValueError:
            raise ValueError("a comma list of ip:port (or ip), e.g. 10.0.0.2:53") from None
        servers.append(address)
    if not servers:
        raise ValueError("a comma list of ip:port (or ip), e.g. 10.0.0.2:53")
    return tuple(servers)


_ROUTE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def load_proxy(sidecar: Literal["breaker", "ambassador"], env: Mapping[str, str]) -> ProxySettings:
    settings, reader = _read_proxy(sidecar, env)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def _read_proxy(
    sidecar: Literal["breaker", "ambassador"], env: Mapping[str, str]
) -> tuple[ProxySettings, EnvReader]:
    """The settings and the reader that read them (its problems, its variables)."""
    prefix = sidecar.upper() + "_"
    preset = _PROXY_PRESETS[sidecar]
    reader = EnvReader(env, prefix)
    common = _common(env, reader, preset.admin_listen)
    route_names: tuple[str, ...] = reader.get("ROUTES", p.comma_list, ())
    routes: list[RouteSettings] = []
    top: RouteSettings | None = None
    if not route_names or (prefix + "UPSTREAM") in env:
        top = _route_settings(reader, None, "", preset.listen, preset.max_attempts)
        if top is not None:
            routes.append(top)
    else:
        # The top-level variables still carry shared policy defaults for every route.
        shared = EnvReader({**env, prefix + "UPSTREAM": "http://shared.invalid"}, prefix)
        top = _route_settings(shared, None, "", preset.listen, preset.max_attempts)
        reader.used |= shared.used
        reader.problems.extend(x for x in shared.problems if x not in reader.problems)
    for route_name in route_names:
        if not _ROUTE_NAME.match(route_name):
            reader.problems.append(
                f"{prefix}ROUTES has {route_name!r}: route names are letters and digits"
            )
            continue
        route_reader = EnvReader(env, f"{prefix}ROUTE_{route_name.upper()}_")
        route = _route_settings(
            route_reader, top, route_name.lower(), "127.0.0.1:0", preset.max_attempts
        )
        if route is not None and route.listen.port == 0:
            route_reader.problems.append(
                f"{route_reader.prefix}LISTEN is required: each route has its own port"
            )
        reader.used |= route_reader.used
        reader.problems.extend(route_reader.problems)
        if route is not None:
            routes.append(route)
    settings = ProxySettings(
        sidecar=sidecar,
        common=common,
        routes=tuple(routes),
        max_header_size=reader.get("MAX_HEADER_SIZE", p.size, 64 * 1024),
        max_body=reader.get("MAX_BODY", p.size),
        header_timeout=reader.get("HEADER_TIMEOUT", p.positive_duration, 10.0),
        idle_timeout=reader.get("IDLE_TIMEOUT", p.positive_duration, 60.0),
        upstream_idle_timeout=reader.get("UPSTREAM_IDLE_TIMEOUT", p.positive_duration, 30.0),
        upstream_max_idle=reader.get("UPSTREAM_MAX_IDLE", p.int_range(0, 10000), 64),
        dns_ttl=reader.get("DNS_TTL", p.duration, 5.0),
        dns_servers=reader.get("DNS_SERVERS", _dns_servers, ()),
        # Access lines are level info: warn and error turn them off unless asked for.
        access_log=reader.get("ACCESS_LOG", p.boolean, common.log_level in ("debug", "info")),
        access_log_buffer=reader.get("ACCESS_LOG_BUFFER", p.size, 64 * 1024),
        access_log_flush=reader.get("ACCESS_LOG_FLUSH", p.positive_duration, 0.1),
        trace_context=reader.get("TRACE_CONTEXT", p.boolean, True),
    )
    ports = [str(route.listen) for route in routes] + [str(common.admin_listen)]
    duplicates = sorted({port for port in ports if ports.count(port) > 1 and port[-2:] != ":0"})
    for port in duplicates:
        reader.problems.append(f"{port} is used by more than one listener: give each its own port")
    reader.reject_unknown()
    return settings, reader


def load_log_adapter(env: Mapping[str, str]) -> LogAdapterSettings:
    settings, reader = _read_log_adapter(env)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def _redact_spec(raw: str) -> str:
    # Imported here: the proxy sidecars load these settings too and need no log redactor.
    from sidecars.logs.redact import check_spec  # noqa: PLC0415

    return check_spec(raw)


def _read_log_adapter(env: Mapping[str, str]) -> tuple[LogAdapterSettings, EnvReader]:
    reader = EnvReader(env, "LOGADAPTER_")
    common = _common(env, reader, "0.0.0.0:9903")
    inputs: tuple[str, ...] = reader.get("INPUTS", p.comma_list, ("stdin",))
    for name in inputs:
        if name not in ("stdin", "forward", "tail", "syslog"):
            reader.fail("LOGADAPTER_INPUTS", ",".join(inputs), "stdin, forward, tail, syslog")
    outputs: tuple[str, ...] = reader.get("OUTPUTS", p.comma_list, ("stdout",))
    for output in outputs:
        _check_output(reader, output)
    log_format = reader.get("FORMAT", str.strip, "auto")
    known_formats = ("auto", "json", "logfmt", "clf", "syslog", "cri", "raw")
    if log_format.startswith("regex:"):
        try:
            compiled = re.compile(log_format[len("regex:") :])
            if not compiled.groupindex:
                raise ValueError
        except (re.error, ValueError):
            reader.fail("LOGADAPTER_FORMAT", log_format, "regex:<pattern with named groups>")
    elif log_format not in known_formats:
        reader.fail("LOGADAPTER_FORMAT", log_format, ", ".join(known_formats) + ", regex:...")
    redact = reader.get("REDACT", _redact_spec, "default")
    tail_paths: tuple[str, ...] = reader.get("TAIL_PATHS", p.comma_list, ())
    if "tail" in inputs and not tail_paths:
        reader.problems.append(
            "LOGADAPTER_TAIL_PATHS is required when LOGADAPTER_INPUTS has tail: "
            "e.g. /var/log/app/*.log"
        )
    settings = LogAdapterSettings(
        common=common,
        inputs=inputs,
        forward_listen=reader.get("FORWARD_LISTEN", listen_address, _DEFAULT_FORWARD_LISTEN),
        forward_shared_key=reader.get("FORWARD_SHARED_KEY", str.strip),
        tail_paths=tail_paths,
        syslog_listen=reader.get("SYSLOG_LISTEN", p.host_port, p.host_port("0.0.0.0:5140")),
        outputs=outputs,
        service=reader.get("SERVICE", str.strip),
        format=log_format,
        multiline=reader.get("MULTILINE", p.choice("auto", "off"), "auto") == "auto",
        multiline_timeout=reader.get("MULTILINE_TIMEOUT", p.positive_duration, 0.5),
        multiline_max_bytes=reader.get("MULTILINE_MAX_BYTES", p.size, 256 * 1024),
        max_line_bytes=reader.get("MAX_LINE_BYTES", p.size, 256 * 1024),
        redact=redact,
        buffer_dir=reader.get("BUFFER_DIR", str.strip),
        buffer_max=reader.get("BUFFER_MAX", p.size, 64 * 1024 * 1024),
        state_dir=reader.get("STATE_DIR", str.strip),
        ecs_metadata_uri=env.get("ECS_CONTAINER_METADATA_URI_V4") or None,
        remote=_remote_outputs(reader, env, outputs),
    )
    settings = _input_bounds(reader, settings)
    reader.reject_unknown()
    return settings, reader


def _optional_duration(raw: str) -> float | None:
    return None if raw.strip().lower() in ("off", "0") else p.positive_duration(raw)


def _input_bounds(reader: EnvReader, settings: LogAdapterSettings) -> LogAdapterSettings:
    """The log adapter's bounds against hostile input: the longest line kept (split into
    parts of ``MAX_LINE_BYTES``), the Forward handshake and idle deadlines."""
    cap = reader.get("LINE_HARD_CAP", p.size, 8 * 1024 * 1024)
    if cap < settings.max_line_bytes:
        raw = reader.environ.get("LOGADAPTER_LINE_HARD_CAP", "")
        reader.fail(
            "LOGADAPTER_LINE_HARD_CAP", raw, "a size of at least LOGADAPTER_MAX_LINE_BYTES"
        )
    return dataclasses.replace(
        settings,
        line_hard_cap=max(cap, settings.max_line_bytes),
        forward_handshake_timeout=reader.get(
            "FORWARD_HANDSHAKE_TIMEOUT", p.positive_duration, 10.0
        ),
        forward_idle_timeout=reader.get("FORWARD_IDLE_TIMEOUT", _optional_duration, None),
    )


def load(command: SidecarName, env: Mapping[str, str]) -> ProxySettings | LogAdapterSettings:
    if command == "log-adapter":
        return load_log_adapter(env)
    return load_proxy(command, env)


def variables(command: SidecarName) -> list[tuple[str, str]]:
    """Every variable ``command`` reads, with its default as text (what ``--help`` lists):
    read off the loader itself run on an empty environment, so it cannot drift from it.
    The command's own variables by name, then the ``SIDECAR_`` ones."""
    reader = _read_log_adapter({})[1] if command == "log-adapter" else _read_proxy(command, {})[1]
    listed = [(name, _default_text(*entry)) for name, entry in reader.defaults.items()]
    return sorted(listed, key=lambda item: (item[0].startswith("SIDECAR_"), item[0]))


def _default_text(default: object, parse: Any) -> str:
    """A default as the text a user would set (``25ms``, ``1MiB``, ``on``, ``500-599``)."""
    if default is p.REQUIRED:
        return "required"
    if default is None or default in ((), ""):
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float) and parse in (p.duration, p.positive_duration):
        return p.duration_text(default)
    if isinstance(default, int) and parse is p.size:
        return p.size_text(default)
    if isinstance(default, frozenset):
        return _compact_statuses(default)
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


_SECRET_FIELDS = {"admin_token", "forward_shared_key"}
_HEADER_FIELDS = {"otlp_headers", "http_headers"}
_URL_FIELDS = {"state_redis_url", "rate_limit_redis_url", "outputs"}


def to_json_dict(settings: Any) -> Any:
    """Settings as JSON-ready data with secrets masked (for ``sidecars config`` and /status)."""
    if isinstance(settings, (Upstream, HostPort, RetryOn, UnixAddress)):
        return str(settings)
    if isinstance(settings, Fault):
        return settings.describe()
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        out: dict[str, Any] = {}
        for field in dataclasses.fields(settings):
            value = getattr(settings, field.name)
            if field.name in _SECRET_FIELDS and value is not None:
                out[field.name] = "***"
            elif field.name in _HEADER_FIELDS:
                out[field.name] = {name: "***" for name, _ in value}
            elif field.name in _URL_FIELDS and isinstance(value, str):
                out[field.name] = p.mask_url(value)
            elif field.name in _URL_FIELDS and isinstance(value, tuple):
                out[field.name] = [p.mask_url(url) for url in value]
            else:
                out[field.name] = to_json_dict(value)
        return out
    if isinstance(settings, frozenset):
        return _compact_statuses(settings)
    if isinstance(settings, tuple):
        return [to_json_dict(item) for item in settings]
    return settings


def _compact_statuses(codes: frozenset[int]) -> str:
    ranges: list[str] = []
    for code in sorted(codes):
        if ranges and code == int(ranges[-1].split("-")[-1]) + 1:
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{code}"
        else:
            ranges.append(str(code))
    return ",".join(ranges)
