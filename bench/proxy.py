"""Proxy benchmark: the breaker and ambassador sidecars beside HAProxy, same nginx, same run.

Every contestant forwards to one nginx upstream (a tiny static 200). ``wrk`` drives each in
turn, alternating peer and sidecar every round; the ratio of median requests/s is printed per
scenario, with the sidecar's RSS after load, CPU seconds per 1,000 requests and time to ready.

    python -m bench.proxy                    # every scenario, 5 rounds of 5 s
    python -m bench.proxy --quick            # 3 rounds of 2 s
    python -m bench.proxy --scenario plain --scenario ready
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from string import Template
from typing import Any

from bench.common import (
    BENCH_DIR,
    LOOPBACK,
    BenchError,
    ManagedProcess,
    Patience,
    Target,
    build_sidecars,
    cpu_seconds,
    finish_run,
    free_port,
    http_request,
    measured_quietly,
    median,
    print_table,
    scratch_dir,
    sidecar_env,
    status_kib,
    stop_children_on_sigterm,
    warn_if_busy,
)

CONFIG_DIR = BENCH_DIR / "config"
ADMIN_TOKEN = "bench-token"
SCENARIOS = ("plain", "ambassador", "open", "relay", "cluster", "faults", "canary", "caps", "ready")
# The cluster scenario's three upstreams: one nginx listening on three loopback addresses.
CLUSTER_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
RATIO_TARGET = 0.5
# Faults configured at 0% (none injected): forwarding within 3% of the same sidecar without.
FAULTS_AT_ZERO = {"BREAKER_FAULT_ABORT": "503@0%", "BREAKER_FAULT_DELAY": "200ms@0%",
                  "BREAKER_FAULT_RESET": "0%"}  # fmt: skip
FAULTS_OVERHEAD_TARGET = 0.97
# A canary configured at weight 0 costs at most 3% of the forwarding rate of the same sidecar.
CANARY_IDLE_TARGET = 0.97
CANARY_IDLE_NAME = "breaker (canary at 0)"
RSS_TARGET_MB = 40.0
READY_TARGET_S = 0.5
# The caps scenario: overload limits configured but never reached cost at most 3%.
CAPS_TARGET = 0.97
CAPS = {
    "BREAKER_MAX_REQUESTS": "100000",
    "BREAKER_MAX_PENDING": "1000",
    "BREAKER_MAX_ACTIVE_RETRIES": "1000",
    "BREAKER_RATE_LIMIT": "100000000/s",
}

# HAProxy's own answer in the rejection scenario, shaped like the sidecar's circuit_open body.
HAPROXY_STATIC_503 = (
    "    http-request return status 503 content-type application/json "
    "hdr Retry-After 30 hdr X-Sidecar-Error circuit_open "
    'string \'{"error":"circuit_open","detail":"circuit open","upstream":"nginx"}\''
)


@dataclass(frozen=True)
class LoadShape:
    rounds: int
    seconds: int
    warmup_seconds: int
    connections: int
    threads: int
    ready_starts: int


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_us: dict[str, float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def socket_errors(self) -> int:
        return sum(count for kind, count in self.errors.items() if kind != "status")


def run_wrk(url: str, seconds: int, shape: LoadShape) -> WrkRun:
    argv = [
        "wrk",
        f"-t{shape.threads}",
        f"-c{shape.connections}",
        f"-d{seconds}s",
        "-s",
        str(CONFIG_DIR / "wrk_report.lua"),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line.removeprefix("WRK_JSON "))
            return WrkRun(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors={k: int(v) for k, v in data["errors"].items()},
                latency_us={k: float(v) for k, v in data["latency_us"].items()},
            )
    raise BenchError(f"wrk gave no summary (exit {done.returncode}): {done.stderr.strip()}")


@dataclass
class Contestant:
    """One process under load (or none: nginx measured directly) and its measured rounds."""

    name: str
    role: str  # "peer", "sidecar" or "reference"
    url: str
    expect_status: int
    process: ManagedProcess | None
    check: Callable[[int, dict[str, str]], str | None] | None = None
    ready_seconds: float | None = None
    runs: list[WrkRun] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)
    rss_kib: int | None = None
    hwm_kib: int | None = None

    def verify(self) -> None:
        """One request before the load: the contestant answers what the scenario expects."""
        try:
            status, headers, body = http_request(self.url)
        except OSError as error:
            raise BenchError(f"{self.name}: GET {self.url} failed: {error!r}") from error
        if status != self.expect_status:
            raise BenchError(
                f"{self.name}: GET {self.url} gave {status}, expected {self.expect_status}: "
                f"{body[:200]!r}"
            )
        problem = self.check(status, headers) if self.check else None
        if problem:
            raise BenchError(f"{self.name}: {problem}")

    def measure(self, seconds: int, shape: LoadShape) -> tuple[WrkRun, float]:
        """One wrk run; returns it and the contestant's CPU seconds meanwhile."""
        before = cpu_seconds(self.process.pid) if self.process else 0.0
        run = run_wrk(self.url, seconds, shape)
        used = cpu_seconds(self.process.pid) - before if self.process else 0.0
        if self.process:
            self.process.check_alive()
        return run, used

    def keep(self, run: WrkRun, cpu: float, others: float) -> None:
        self.runs.append(run)
        self.cpu.append(cpu)
        self.others.append(others)

    @property
    def median_rps(self) -> float:
        return median([run.rps for run in self.runs])

    @property
    def cpu_per_1k(self) -> float | None:
        requests = sum(run.requests for run in self.runs)
        if self.process is None or not requests:
            return None
        return sum(self.cpu) / requests * 1000

    @property
    def bad_responses(self) -> int:
        """Socket errors plus responses whose status class is not the one expected."""
        bad = 0
        for run in self.runs:
            status_errors = run.errors.get("status", 0)
            bad += run.socket_errors
            # wrk counts every status >= 400 under "status".
            bad += status_errors if self.expect_status < 400 else run.requests - status_errors
        return bad

    def summary(self, peer_rps: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "rps": [round(run.rps, 1) for run in self.runs],
            "median_rps": round(self.median_rps, 1),
            "ratio_vs_peer": round(self.median_rps / peer_rps, 3) if peer_rps else None,
            "latency_p50_ms": median([run.latency_us["p50"] / 1000 for run in self.runs]),
            "latency_p99_ms": median([run.latency_us["p99"] / 1000 for run in self.runs]),
            "requests": sum(run.requests for run in self.runs),
            "bad_responses": self.bad_responses,
            "errors": [run.errors for run in self.runs],
            "cpu_seconds_per_1k_requests": self.cpu_per_1k,
            "rss_mb_after_load": self.rss_kib / 1024 if self.rss_kib is not None else None,
            "peak_rss_mb": self.hwm_kib / 1024 if self.hwm_kib is not None else None,
            "ready_seconds": self.ready_seconds,
            "others_cpu_share_per_round": [round(share, 3) for share in self.others],
        }


# --- the processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class NginxUpstream:
    port: int
    pid: int
    hosts: tuple[str, ...] = (LOOPBACK,)


@contextlib.contextmanager
def nginx_upstream(hosts: tuple[str, ...] = (LOOPBACK,)) -> Iterator[NginxUpstream]:
    """nginx answering on ``port`` of every address in ``hosts``."""
    with scratch_dir("bench-nginx-") as prefix:
        port = free_port()
        listen = "\n".join(f"        listen {host}:{port} reuseport;" for host in hosts)
        conf = Template((CONFIG_DIR / "nginx.conf.tmpl").read_text()).substitute(
            prefix=prefix, port=port, listen=listen
        )
        (prefix / "nginx.conf").write_text(conf)
        argv = [
            "nginx",
            "-p",
            str(prefix),
            "-e",
            str(prefix / "error.log"),
            "-c",
            str(prefix / "nginx.conf"),
        ]
        with ManagedProcess("nginx", argv, workdir=prefix) as nginx:
            nginx.wait_port(port)
            yield NginxUpstream(port, nginx.pid, hosts)


@contextlib.contextmanager
def haproxy(
    upstream_port: int,
    *,
    frontend: str = "",
    backend: str = "",
    hosts: tuple[str, ...] = (LOOPBACK,),
) -> Iterator[Contestant]:
    with scratch_dir("bench-haproxy-") as workdir:
        port = free_port()
        servers = "\n".join(
            f"    server nginx{n} {host}:{upstream_port}" for n, host in enumerate(hosts)
        )
        conf = Template((CONFIG_DIR / "haproxy.cfg.tmpl").read_text()).substitute(
            port=port,
            frontend_extra=frontend,
            backend_extra=backend,
            servers=servers,
        )
        (workdir / "haproxy.cfg").write_text(conf)
        argv = ["haproxy", "-db", "-f", str(workdir / "haproxy.cfg")]
        with ManagedProcess("haproxy", argv, workdir=workdir) as process:
            ready = process.wait_port(port)
            yield Contestant(
                name="haproxy",
                role="peer",
                url=f"http://{LOOPBACK}:{port}/",
                expect_status=200,
                process=process,
                ready_seconds=ready,
            )


def _sidecar_checks(expect_error: str | None) -> Callable[[int, dict[str, str]], str | None]:
    def check(_: int, headers: dict[str, str]) -> str | None:
        lowered = {key.lower(): value for key, value in headers.items()}
        if expect_error is None and lowered.get("x-sidecar-attempts") != "1":
            return f"expected X-Sidecar-Attempts: 1, got headers {headers}"
        if expect_error is not None and lowered.get("x-sidecar-error") != expect_error:
            return f"expected X-Sidecar-Error: {expect_error}, got headers {headers}"
        return None

    return check


def start_sidecar(
    command: str,
    upstream_port: int,
    log_level: str,
    extra: dict[str, str] | None = None,
    hosts: tuple[str, ...] = (LOOPBACK,),
) -> tuple[ManagedProcess, int, int]:
    """``python -m sidecars <command>`` on free ports; returns (process, data, admin port).
    Several ``hosts``: a cluster of one endpoint per address."""
    prefix = command.upper()
    port, admin_port = free_port(), free_port()
    env = sidecar_env(
        {
            f"{prefix}_UPSTREAM": ",".join(f"http://{host}:{upstream_port}" for host in hosts),
            f"{prefix}_LISTEN": f"{LOOPBACK}:{port}",
            f"{prefix}_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
            "SIDECAR_ADMIN_TOKEN": ADMIN_TOKEN,
            "SIDECAR_LOG_LEVEL": log_level,
            **(extra or {}),
        }
    )
    argv = [sys.executable, "-m", "sidecars", command]
    return ManagedProcess(command, argv, env=env), port, admin_port


@contextlib.contextmanager
def sidecar(
    command: str,
    upstream_port: int,
    log_level: str,
    *,
    extra: dict[str, str] | None = None,
    force_open: bool = False,
    hosts: tuple[str, ...] = (LOOPBACK,),
    name: str | None = None,
) -> Iterator[Contestant]:
    process, port, admin_port = start_sidecar(command, upstream_port, log_level, extra, hosts)
    with process:
        ready = process.wait_http_ok(f"http://{LOOPBACK}:{admin_port}/readyz")
        if force_open:
            status, _, body = http_request(
                f"http://{LOOPBACK}:{admin_port}/breaker/open",
                method="POST",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            if status != 200:
                raise BenchError(f"POST /breaker/open gave {status}: {body[:200]!r}")
        yield Contestant(
            name=name or command + (" (open)" if force_open else ""),
            role="sidecar",
            url=f"http://{LOOPBACK}:{port}/",
            expect_status=503 if force_open else 200,
            process=process,
            check=_sidecar_checks("circuit_open" if force_open else None),
            ready_seconds=ready,
        )


@contextlib.contextmanager
def relay(upstream_port: int) -> Iterator[Contestant]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.relay",
        "--listen",
        str(port),
        "--upstream",
        str(upstream_port),
    ]
    with ManagedProcess("relay", argv, env=sidecar_env({})) as process:
        ready = process.wait_port(port)
        yield Contestant(
            name="uvloop relay",
            role="reference",
            url=f"http://{LOOPBACK}:{port}/",
            expect_status=200,
            process=process,
            ready_seconds=ready,
        )


# --- scenarios ------------------------------------------------------------------------------


def alternate(
    contestants: list[Contestant],
    shape: LoadShape,
    bystanders: Sequence[int],
    patience: Patience,
) -> None:
    """Warm every contestant up, then run rounds, reversing the order every other round.

    ``bystanders`` are our own processes that work during every round (nginx), so that their
    CPU is not taken for other people's.
    """
    for contestant in contestants:
        contestant.verify()
        contestant.measure(shape.warmup_seconds, shape)
    for round_index in range(shape.rounds):
        order = contestants if round_index % 2 == 0 else contestants[::-1]
        for contestant in order:
            label = f"round {round_index + 1}: {contestant.name:<18}"
            (run, cpu), others = measured_quietly(
                functools.partial(contestant.measure, shape.seconds, shape),
                label,
                patience,
                own_pids=[*([contestant.process.pid] if contestant.process else []), *bystanders],
            )
            contestant.keep(run, cpu, others)
            print(
                f"    {label} {run.rps:>10,.0f} req/s  (others used {others:.0%} of the CPUs)",
                flush=True,
            )
    for contestant in contestants:
        if contestant.process is not None:
            contestant.rss_kib = status_kib(contestant.process.pid, "VmRSS")
            contestant.hwm_kib = status_kib(contestant.process.pid, "VmHWM")


def run_scenario(
    name: str, upstream: NginxUpstream, shape: LoadShape, log_level: str, patience: Patience
) -> list[Contestant]:
    upstream_port = upstream.port
    with contextlib.ExitStack() as stack:
        if name == "plain":
            contestants = [
                stack.enter_context(haproxy(upstream_port)),
                stack.enter_context(sidecar("breaker", upstream_port, log_level)),
            ]
        elif name == "ambassador":
            contestants = [
                stack.enter_context(
                    haproxy(
                        upstream_port,
                        backend="    retries 3\n    retry-on all-retryable-errors",
                    )
                ),
                stack.enter_context(
                    sidecar(
                        "ambassador",
                        upstream_port,
                        log_level,
                        extra={"AMBASSADOR_MAX_ATTEMPTS": "3"},
                    )
                ),
            ]
        elif name == "open":
            peer = stack.enter_context(haproxy(upstream_port, frontend=HAPROXY_STATIC_503))
            peer.expect_status = 503
            contestants = [
                peer,
                stack.enter_context(
                    sidecar(
                        "breaker",
                        upstream_port,
                        log_level,
                        extra={"BREAKER_OPEN_SECONDS": "1h"},
                        force_open=True,
                    )
                ),
            ]
        elif name == "cluster":
            hosts = CLUSTER_HOSTS
            contestants = [
                stack.enter_context(
                    haproxy(upstream_port, backend="    balance leastconn", hosts=hosts)
                ),
                stack.enter_context(sidecar("breaker", upstream_port, log_level, hosts=hosts)),
            ]
        elif name == "faults":
            contestants = [
                stack.enter_context(haproxy(upstream_port)),
                stack.enter_context(sidecar("breaker", upstream_port, log_level)),
                stack.enter_context(
                    sidecar(
                        "breaker",
                        upstream_port,
                        log_level,
                        extra=FAULTS_AT_ZERO,
                        name="breaker (faults 0%)",
                    )
                ),
            ]
        elif name == "canary":
            # The same nginx as the canary: weight 0 sends it nothing, the filter still runs.
            canary = {
                "BREAKER_CANARY_UPSTREAM": f"http://{LOOPBACK}:{upstream_port}",
                "BREAKER_CANARY_WEIGHT": "0",
            }
            contestants = [
                stack.enter_context(haproxy(upstream_port)),
                stack.enter_context(sidecar("breaker", upstream_port, log_level)),
                stack.enter_context(
                    sidecar(
                        "breaker", upstream_port, log_level, extra=canary, name=CANARY_IDLE_NAME
                    )
                ),
            ]
        elif name == "caps":
            contestants = [
                stack.enter_context(haproxy(upstream_port)),
                stack.enter_context(sidecar("breaker", upstream_port, log_level)),
                stack.enter_context(
                    sidecar("breaker", upstream_port, log_level, extra=CAPS, name="breaker capped")
                ),
            ]
        elif name == "relay":
            contestants = [
                stack.enter_context(haproxy(upstream_port)),
                stack.enter_context(relay(upstream_port)),
                Contestant(
                    "nginx direct", "reference", f"http://{LOOPBACK}:{upstream_port}/", 200, None
                ),
            ]
        else:
            raise ValueError(name)
        alternate(contestants, shape, [upstream.pid], patience)
        return contestants


def measure_ready(
    upstream_port: int, starts: int, log_level: str, patience: Patience
) -> list[float]:
    """Seconds from exec of ``python -m sidecars breaker`` to /readyz 200, per start."""
    seconds = []
    for _ in range(starts):
        patience.wait_for_quiet()
        process, _, admin_port = start_sidecar("breaker", upstream_port, log_level)
        with process:
            seconds.append(process.wait_http_ok(f"http://{LOOPBACK}:{admin_port}/readyz"))
    return seconds


# --- report ---------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_scenario(name: str, contestants: list[Contestant]) -> list[dict[str, Any]]:
    peer_rps = contestants[0].median_rps
    summaries = [contestant.summary(peer_rps) for contestant in contestants]
    rows = [
        [
            s["name"],
            " ".join(f"{rps / 1000:.1f}k" for rps in s["rps"]),
            f"{s['median_rps']:,.0f}",
            _fmt(s["ratio_vs_peer"], ".2f"),
            f"{s['latency_p50_ms']:.2f}/{s['latency_p99_ms']:.2f}",
            _fmt(s["cpu_seconds_per_1k_requests"], ".4f"),
            _fmt(s["rss_mb_after_load"], ".1f"),
            str(s["bad_responses"]),
            f"{max(s['others_cpu_share_per_round']):.0%}",
        ]
        for s in summaries
    ]
    print(f"\n== {name}")
    print_table(
        [
            "contestant",
            "req/s per round",
            "median",
            "ratio",
            "p50/p99 ms",
            "cpu s/1k",
            "RSS MB",
            "bad",
            "others max",
        ],
        rows,
    )
    return summaries


def canary_idle_target(summaries: list[dict[str, Any]]) -> Target:
    """The canary scenario's own target: the sidecar with a canary at weight 0 against the
    same sidecar without one, same run."""
    by_name = {summary["name"]: summary["median_rps"] for summary in summaries}
    plain, idle = by_name.get("breaker"), by_name.get(CANARY_IDLE_NAME)
    ratio = round(idle / plain, 3) if plain and idle is not None else None
    return Target("canary: at weight 0 / without", ratio, CANARY_IDLE_TARGET, at_least=True)


def unmeasured_targets(scenario: str) -> list[Target]:
    """The targets a failed scenario would have judged, shown as n/a rather than left out."""
    if scenario == "ready":
        return [Target("sidecar ready (median)", None, READY_TARGET_S, False, " s")]
    if scenario == "relay":
        return []
    if scenario == "faults":
        return [Target("faults: 0% faults / none", None, FAULTS_OVERHEAD_TARGET, True)]
    if scenario == "canary":
        return [Target("canary: at weight 0 / without", None, CANARY_IDLE_TARGET, True)]
    if scenario == "caps":
        return [Target("caps: capped / uncapped", None, CAPS_TARGET, True)]
    return [
        Target(f"{scenario}: sidecar / haproxy", None, RATIO_TARGET, True),
        Target(f"{scenario}: sidecar RSS after load", None, RSS_TARGET_MB, False, " MB"),
    ]


def faults_overhead(summaries: list[dict[str, Any]]) -> Target:
    """The faults scenario's ratio with faults configured at 0% over the one without."""
    ratios = {s["name"]: s["ratio_vs_peer"] for s in summaries}
    with_faults, without = ratios.get("breaker (faults 0%)"), ratios.get("breaker")
    overhead = with_faults / without if with_faults and without else None
    return Target("faults: 0% faults / none", overhead, FAULTS_OVERHEAD_TARGET, at_least=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2 s, 3 starts")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only these (repeatable); default: all",
    )
    parser.add_argument("--rounds", type=int, help="measured rounds per contestant")
    parser.add_argument("--seconds", type=int, help="seconds per measured round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--log-level",
        default="info",
        help="SIDECAR_LOG_LEVEL for the sidecars (default: info, the default)",
    )
    parser.add_argument(
        "--patience",
        type=float,
        default=120.0,
        help="seconds the run may spend in all waiting for other work to leave the CPUs "
        "idle and re-running noisy rounds (default 120; 0: never wait)",
    )
    args = parser.parse_args(argv)
    stop_children_on_sigterm()
    build_sidecars()
    patience = Patience(args.patience)
    shape = LoadShape(
        rounds=args.rounds or (3 if args.quick else 5),
        seconds=args.seconds or (2 if args.quick else 5),
        warmup_seconds=1 if args.quick else 2,
        connections=args.connections,
        threads=1,
        ready_starts=3 if args.quick else 7,
    )
    scenarios = args.scenario or list(SCENARIOS)
    results: dict[str, Any] = {
        "shape": shape.__dict__,
        "log_level": args.log_level,
        "scenarios": {},
    }
    targets: list[Target] = []
    failed = False
    results["cpu_busy_before"] = round(warn_if_busy("before the run"), 3)
    started = time.perf_counter()
    with nginx_upstream((LOOPBACK, *CLUSTER_HOSTS)) as upstream:
        for name in scenarios:
            print(f"\n-- scenario {name}", flush=True)
            try:
                if name == "ready":
                    starts = measure_ready(
                        upstream.port, shape.ready_starts, args.log_level, patience
                    )
                    ready = median(starts)
                    print(
                        f"\n== ready\n  exec -> /readyz 200: median {ready:.3f}s of "
                        f"{', '.join(f'{s:.3f}' for s in starts)}"
                    )
                    results["scenarios"]["ready"] = {"seconds": starts, "median": ready}
                    targets.append(
                        Target(
                            "sidecar ready (median)",
                            ready,
                            READY_TARGET_S,
                            at_least=False,
                            unit=" s",
                        )
                    )
                    continue
                contestants = run_scenario(name, upstream, shape, args.log_level, patience)
            except BenchError as error:
                failed = True
                print(f"  FAILED: {error}", flush=True)
                results["scenarios"][name] = {"error": str(error)}
                targets.extend(unmeasured_targets(name))
                continue
            summaries = print_scenario(name, contestants)
            results["scenarios"][name] = {"contestants": summaries}
            if name == "faults":
                targets.append(faults_overhead(summaries))
            if name == "caps":
                uncapped, capped = (s["ratio_vs_peer"] for s in summaries[1:3])
                ratio = capped / uncapped if capped and uncapped else None
                print(f"  capped / uncapped: {_fmt(ratio, '.3f')}")
                targets.append(Target("caps: capped / uncapped", ratio, CAPS_TARGET, True))
            for summary in summaries:
                if summary["role"] != "sidecar":
                    continue
                targets.append(
                    Target(
                        f"{name}: {summary['name']} / haproxy",
                        summary["ratio_vs_peer"],
                        RATIO_TARGET,
                        at_least=True,
                    )
                )
                targets.append(
                    Target(
                        f"{name}: {summary['name']} RSS after load",
                        summary["rss_mb_after_load"],
                        RSS_TARGET_MB,
                        at_least=False,
                        unit=" MB",
                    )
                )
            if name == "canary":
                targets.append(canary_idle_target(summaries))
    finish_run("proxy", results, targets, started, patience)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
