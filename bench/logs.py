"""Log adapter benchmark: lines/s beside syslog-ng and a Python orjson floor, same run.

1. Mixed corpus, stdin -> stdout: ``cat corpus |`` each contestant, output to a file. The
   contestants alternate every round; the median lines/s and ratios are printed. The rate
   "on one core" divides by the larger of wall time and CPU time, so a contestant that used
   more than one core is not flattered; start-up is included (and shown separately).
2. Forward input: pre-encoded PackedForward batches over one TCP connection into the adapter
   (stdout to /dev/null), beside a minimal msgpack+orjson Forward server as the floor.
3. Outputs: the same Forward records into each output in turn (forward://, http:// NDJSON,
   otlp+http:// protobuf and JSON, cloudwatch://), each into ``bench.log_destination``, which
   takes everything at once (acks, 200 ``{}``), so that the output is what is measured; the
   OTLP output's rate is judged against the Forward output's of the same run. Then the OTLP
   output with its destination down: the memory used while the buffer holds the input back.

The adapter measured is the build the images ship (``tools.compiled``: the per-line modules
compiled by mypyc); ``adapter (py)`` is the same source as pure Python, shown beside it.

    python -m bench.logs                 # 500k lines, 3 rounds; 300k Forward records, 3 rounds
    python -m bench.logs --quick         # 100k lines, 2 rounds; 100k records, 2 rounds
    python -m bench.logs --part stdin    # or --part forward, --part outputs
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import msgpack

from bench.common import (
    BENCH_DIR,
    LOOPBACK,
    BenchError,
    ManagedProcess,
    Patience,
    Target,
    build_sidecars,
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
from bench.corpus import single_line_events, write_corpus

LINES_TARGET = 150_000.0
FORWARD_TARGET = 100_000.0
OUTPUT_IDLE_SECONDS = 2.0
RUN_TIMEOUT_SECONDS = 300.0
FORWARD_BATCH = 500
PURE_PYTHON = "adapter (py)"
"""The log adapter without its compiled modules (an editable install), shown beside the
shipped build for comparison; the targets are judged on the shipped build."""
METRICS_POLL_SECONDS = 0.05


# --- stdin -> stdout ------------------------------------------------------------------------


@dataclass(frozen=True)
class PipeRun:
    """One contestant's pass over the corpus."""

    wall: float
    cpu: float
    peak_rss_kib: int
    records_out: int
    ended_by: str  # "exit", or "output-idle" when the process kept running after EOF

    def one_core_rate(self, lines: int) -> float:
        return lines / max(self.wall, self.cpu)


@dataclass
class PipeContestant:
    name: str
    role: str  # "sidecar", "peer" or "floor"
    argv: list[str]
    env: dict[str, str] | None
    output_file: Path | None = None  # None: the contestant's stdout is its output
    runs: list[PipeRun] = field(default_factory=list)
    startup: list[float] = field(default_factory=list)
    others: list[float] = field(default_factory=list)

    def rate(self, lines: int) -> float:
        return median([run.one_core_rate(lines) for run in self.runs])

    def summary(self, lines: int, peer_rate: float) -> dict[str, Any]:
        rate = self.rate(lines)
        startup = median(self.startup)
        wall = median([run.wall for run in self.runs])
        return {
            "name": self.name,
            "role": self.role,
            "lines_per_second_one_core": [round(run.one_core_rate(lines)) for run in self.runs],
            "median_lines_per_second": round(rate),
            "median_wall_lines_per_second": round(lines / wall),
            "cores_used": round(median([run.cpu / run.wall for run in self.runs]), 2),
            "ratio_vs_syslog_ng": round(rate / peer_rate, 3) if peer_rate else None,
            "wall_seconds": [round(run.wall, 3) for run in self.runs],
            "cpu_seconds": [round(run.cpu, 3) for run in self.runs],
            "startup_seconds": round(startup, 3),
            "lines_per_second_after_startup": round(lines / (wall - startup))
            if wall > startup
            else None,
            "records_out": [run.records_out for run in self.runs],
            "peak_rss_mb": max(run.peak_rss_kib for run in self.runs) / 1024,
            "ended_by": sorted({run.ended_by for run in self.runs}),
            "others_cpu_share_per_round": [round(share, 3) for share in self.others],
        }


def count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
    return count


def _wait_for_pipe(
    process: subprocess.Popen[bytes],
    feeder: subprocess.Popen[bytes],
    output: Path,
    started: float,
    started_wall: float,
) -> tuple[float, str, resource.struct_rusage, int]:
    """Wait for the contestant: (end time, how it ended, its rusage, its peak RSS in KiB)."""
    ended_by = "exit"
    input_done_at: float | None = None
    # wait4's ru_maxrss counts the harness's own pages copied at fork (before exec), so the
    # peak is sampled from /proc instead.
    peak_rss_kib = 0
    while True:
        peak_rss_kib = max(peak_rss_kib, status_kib(process.pid, "VmHWM", tree=False))
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            ended = time.perf_counter()
            break
        if time.perf_counter() - started > RUN_TIMEOUT_SECONDS:
            process.kill()
        if input_done_at is None and feeder.poll() is not None:
            input_done_at = time.time()
        if input_done_at is not None:
            # Input is done; a contestant that keeps running after EOF (a daemon-style stdin
            # input) is judged done when its output has been idle a while.
            last_write = output.stat().st_mtime if output.exists() else input_done_at
            if time.time() - last_write > OUTPUT_IDLE_SECONDS:
                process.send_signal(signal.SIGTERM)
                _, status, usage = os.wait4(process.pid, 0)
                ended = started + (last_write - started_wall)
                ended_by = "output-idle"
                break
        time.sleep(0.005)  # polling interval for the exit, not a readiness guess
    process.returncode = os.waitstatus_to_exitcode(status)
    feeder.wait()
    return ended, ended_by, usage, peak_rss_kib


def run_pipe(contestant: PipeContestant, corpus: Path, workdir: Path) -> PipeRun:
    """``cat corpus | contestant``, timed from spawn to exit (or to its last output write)."""
    stdout_path = workdir / "stdout"
    output = contestant.output_file or stdout_path
    output.unlink(missing_ok=True)
    stderr_path = workdir / "stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        feeder = subprocess.Popen(["cat", str(corpus)], stdout=subprocess.PIPE)
        assert feeder.stdout is not None
        started_wall, started = time.time(), time.perf_counter()
        process = subprocess.Popen(
            contestant.argv,
            env=contestant.env,
            cwd=workdir,
            stdin=feeder.stdout,
            stdout=out,
            stderr=err,
        )
        feeder.stdout.close()
        try:
            ended, ended_by, usage, peak_rss_kib = _wait_for_pipe(
                process, feeder, output, started, started_wall
            )
        finally:
            # On an error or SIGTERM, leave no contestant reading a pipe nobody feeds.
            for child in (process, feeder):
                if child.returncode is None and child.poll() is None:
                    child.kill()
                    child.wait()
    if process.returncode != 0 and ended_by == "exit":
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"{contestant.name} exited {process.returncode}:\n{tail}")
    records = count_lines(output) if output.exists() else 0
    output.unlink(missing_ok=True)
    return PipeRun(
        wall=ended - started,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss_kib=peak_rss_kib,
        records_out=records,
        ended_by=ended_by,
    )


def stdin_contestants(workdir: Path, log_level: str) -> list[PipeContestant]:
    syslog_out = workdir / "syslog-ng.out"
    conf = Template((BENCH_DIR / "config" / "syslog-ng.conf.tmpl").read_text()).substitute(
        output=syslog_out
    )
    (workdir / "syslog-ng.conf").write_text(conf)
    adapter_env = {
        "LOGADAPTER_INPUTS": "stdin",
        "LOGADAPTER_OUTPUTS": "stdout",
        "LOGADAPTER_ADMIN_LISTEN": f"{LOOPBACK}:{free_port()}",
        "SIDECAR_LOG_LEVEL": log_level,
    }
    adapter_argv = [sys.executable, "-m", "sidecars", "log-adapter"]
    return [
        PipeContestant(
            "syslog-ng",
            "peer",
            [
                "syslog-ng",
                "-F",
                "--no-caps",
                "-f",
                str(workdir / "syslog-ng.conf"),
                f"--persist-file={workdir / 'syslog-ng.persist'}",
                f"--pidfile={workdir / 'syslog-ng.pid'}",
                f"--control={workdir / 'syslog-ng.ctl'}",
            ],
            None,
            output_file=syslog_out,
        ),
        PipeContestant("log-adapter", "sidecar", adapter_argv, sidecar_env(adapter_env)),
        PipeContestant(
            PURE_PYTHON, "sidecar", adapter_argv, sidecar_env(adapter_env, pure_python=True)
        ),
        PipeContestant(
            "orjson floor", "floor", [sys.executable, "-m", "bench.orjson_floor"], sidecar_env({})
        ),
    ]


def bench_stdin(lines: int, rounds: int, log_level: str, patience: Patience) -> dict[str, Any]:
    with scratch_dir("bench-logs-") as workdir:
        corpus = workdir / "corpus.log"
        empty = workdir / "empty.log"
        empty.write_bytes(b"")
        stats = write_corpus(corpus, lines)
        print(
            f"  corpus: {stats.lines:,} lines, {stats.events:,} events, {stats.bytes / 1e6:.1f} MB",
            flush=True,
        )
        contestants = stdin_contestants(workdir, log_level)
        failures: dict[str, str] = {}
        for contestant in contestants:
            try:
                for _ in range(3):
                    patience.wait_for_quiet()
                    contestant.startup.append(run_pipe(contestant, empty, workdir).wall)
            except BenchError as error:
                failures[contestant.name] = str(error)
                print(f"  {contestant.name} FAILED: {error}", flush=True)
        live = [c for c in contestants if c.name not in failures]
        for round_index in range(rounds):
            order = live if round_index % 2 == 0 else live[::-1]
            for contestant in order:
                if contestant.name in failures:
                    continue
                label = f"round {round_index + 1}: {contestant.name:<13}"
                try:
                    run, others = measured_quietly(
                        functools.partial(run_pipe, contestant, corpus, workdir),
                        label,
                        patience,
                    )
                except BenchError as error:
                    failures[contestant.name] = str(error)
                    print(f"  {contestant.name} FAILED: {error}", flush=True)
                    continue
                contestant.runs.append(run)
                contestant.others.append(others)
                print(
                    f"    {label} {run.one_core_rate(stats.lines):>10,.0f} lines/s  "
                    f"(wall {run.wall:.2f}s, cpu {run.cpu:.2f}s, {run.records_out:,} out, "
                    f"{run.ended_by}; others used {others:.0%} of the CPUs)",
                    flush=True,
                )
    measured = [c for c in contestants if c.runs]
    peer = next((c for c in measured if c.role == "peer"), None)
    peer_rate = peer.rate(stats.lines) if peer else 0.0
    summaries = [c.summary(stats.lines, peer_rate) for c in measured]
    floor = next((s for s in summaries if s["role"] == "floor"), None)
    for summary in summaries:
        summary["ratio_vs_orjson_floor"] = (
            round(summary["median_lines_per_second"] / floor["median_lines_per_second"], 3)
            if floor
            else None
        )
    print("\n== mixed corpus, stdin -> stdout")
    print_table(
        [
            "contestant",
            "lines/s per round (one core)",
            "median",
            "vs syslog-ng",
            "vs floor",
            "wall lines/s",
            "cores",
            "startup s",
            "after startup",
            "records out",
            "peak RSS MB",
            "others max",
        ],
        [
            [
                s["name"],
                " ".join(f"{rate / 1000:.0f}k" for rate in s["lines_per_second_one_core"]),
                f"{s['median_lines_per_second']:,}",
                f"{s['ratio_vs_syslog_ng']:.2f}" if s["ratio_vs_syslog_ng"] is not None else "-",
                f"{s['ratio_vs_orjson_floor']:.2f}"
                if s["ratio_vs_orjson_floor"] is not None
                else "-",
                f"{s['median_wall_lines_per_second']:,}",
                f"{s['cores_used']:.2f}",
                f"{s['startup_seconds']:.3f}",
                f"{s['lines_per_second_after_startup']:,}"
                if s["lines_per_second_after_startup"]
                else "-",
                f"{median(s['records_out']):,.0f}",
                f"{s['peak_rss_mb']:.1f}",
                f"{max(s['others_cpu_share_per_round']):.0%}",
            ]
            for s in summaries
        ],
    )
    return {
        "corpus": {
            "lines": stats.lines,
            "events": stats.events,
            "bytes": stats.bytes,
            "kinds": dict(stats.kinds),
        },
        "contestants": summaries,
        "failures": failures,
    }


# --- Forward input --------------------------------------------------------------------------


def event_time(seconds: float) -> msgpack.ExtType:
    whole = int(seconds)
    return msgpack.ExtType(
        0, whole.to_bytes(4, "big") + int((seconds - whole) * 1e9).to_bytes(4, "big")
    )


def packed_forward_frames(records: int) -> list[bytes]:
    """PackedForward frames as Docker's fluentd driver would fill them, pre-encoded."""
    lines = single_line_events(records)
    now = time.time()
    container_id = "4f" * 32
    frames = []
    for start in range(0, records, FORWARD_BATCH):
        batch = lines[start : start + FORWARD_BATCH]
        entries = b"".join(
            msgpack.packb(
                [
                    event_time(now + index * 1e-5),
                    {
                        "container_id": container_id,
                        "container_name": "/orders-1",
                        "source": "stdout",
                        "log": line,
                    },
                ]
            )
            for index, line in enumerate(batch)
        )
        frames.append(msgpack.packb(["docker.orders", entries, {"size": len(batch)}]))
    return frames


def counter_total(metrics_text: str, name: str) -> float:
    """Sum of every sample of counter ``name`` in Prometheus text."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class CounterSampler(threading.Thread):
    """Polls a sidecar's /metrics for a counter; keeps (time, value) samples."""

    def __init__(self, metrics_url: str, name: str) -> None:
        super().__init__(daemon=True)
        self.metrics_url = metrics_url
        self.name_ = name
        self.samples: list[tuple[float, float]] = []
        self.stop_event = threading.Event()

    def read(self) -> float:
        return counter_total(http_request(self.metrics_url)[2].decode(), self.name_)

    def run(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.perf_counter(), self.read()))
            self.stop_event.wait(METRICS_POLL_SECONDS)


def send_frames(port: int, frames: Sequence[bytes]) -> None:
    with socket.create_connection((LOOPBACK, port)) as sock:
        for frame in frames:
            sock.sendall(frame)


@dataclass(frozen=True)
class ForwardRun:
    seconds: float  # connect -> every record written
    send_seconds: float  # connect -> last byte accepted by the socket
    slope_rate: float | None  # records/s between 10% and 90% written (adapter only)
    records_out: int

    def rate(self, records: int) -> float:
        return records / self.seconds


def slope(samples: list[tuple[float, float]], low: float, high: float) -> float | None:
    """Rate between the first samples at or above ``low`` and ``high`` written records."""
    first = next((s for s in samples if s[1] >= low), None)
    last = next((s for s in samples if s[1] >= high), None)
    if first is None or last is None or last[0] <= first[0]:
        return None
    return (last[1] - first[1]) / (last[0] - first[0])


def forward_adapter_run(
    frames: Sequence[bytes],
    records: int,
    log_level: str,
    peak: list[int],
    *,
    pure_python: bool,
    output_env: Mapping[str, str] | None = None,
) -> ForwardRun:
    port, admin_port = free_port(), free_port()
    env = sidecar_env(
        {
            "LOGADAPTER_INPUTS": "forward",
            "LOGADAPTER_FORWARD_LISTEN": f"{LOOPBACK}:{port}",
            "LOGADAPTER_OUTPUTS": "stdout",
            "LOGADAPTER_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
            "SIDECAR_LOG_LEVEL": log_level,
            **(output_env or {}),
        },
        pure_python=pure_python,
    )
    argv = [sys.executable, "-m", "sidecars", "log-adapter"]
    with ManagedProcess("log-adapter", argv, env=env, stdout=subprocess.DEVNULL) as adapter:
        admin = f"http://{LOOPBACK}:{admin_port}"
        adapter.wait_http_ok(admin + "/readyz")
        sampler = CounterSampler(admin + "/metrics", "logadapter_records_out_total")
        baseline = sampler.read()
        sampler.start()
        started = time.perf_counter()
        send_frames(port, frames)
        sent = time.perf_counter() - started
        finished: float | None = None
        last_progress = (time.perf_counter(), -1.0)
        while finished is None:
            adapter.check_alive()
            for when, value in sampler.samples[-3:]:
                if value - baseline >= records:
                    finished = when
            if sampler.samples and sampler.samples[-1][1] != last_progress[1]:
                last_progress = (time.perf_counter(), sampler.samples[-1][1])
            if time.perf_counter() - last_progress[0] > 10:
                written = last_progress[1] - baseline
                raise BenchError(
                    f"log-adapter wrote {written:.0f} of {records} Forward records "
                    f"and made no progress for 10s\n{adapter.output_tail()}"
                )
            time.sleep(METRICS_POLL_SECONDS / 2)
        sampler.stop_event.set()
        sampler.join()
        peak.append(status_kib(adapter.pid, "VmHWM"))
        samples = [(when, value - baseline) for when, value in sampler.samples]
        return ForwardRun(
            seconds=finished - started,
            send_seconds=sent,
            slope_rate=slope(samples, records * 0.1, records * 0.9),
            records_out=int(samples[-1][1]),
        )


def forward_floor_run(frames: Sequence[bytes], records: int) -> ForwardRun:
    port = free_port()
    argv = [sys.executable, "-m", "bench.forward_floor", "--listen", str(port)]
    with ManagedProcess(
        "forward floor", argv, env=sidecar_env({}), stdout=subprocess.DEVNULL
    ) as floor:
        floor.wait_port(port)
        started = time.perf_counter()
        send_frames(port, frames)
        sent = time.perf_counter() - started
        assert floor.process is not None
        code = floor.process.wait(RUN_TIMEOUT_SECONDS)
        finished = time.perf_counter() - started
        if code != 0:
            raise BenchError(f"forward floor exited {code}\n{floor.output_tail()}")
        written = int(floor.stderr_path.read_text().split()[-2])
    return ForwardRun(seconds=finished, send_seconds=sent, slope_rate=None, records_out=written)


def bench_forward(records: int, rounds: int, log_level: str, patience: Patience) -> dict[str, Any]:
    frames = packed_forward_frames(records)
    size = sum(map(len, frames))
    print(
        f"  {records:,} records in {len(frames)} PackedForward frames, {size / 1e6:.1f} MB",
        flush=True,
    )
    runs: dict[str, list[ForwardRun]] = {"forward floor": [], "log-adapter": [], PURE_PYTHON: []}
    others_share: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, list[int]] = {name: [] for name in runs}
    failures: dict[str, str] = {}
    for round_index in range(rounds):
        names = list(runs) if round_index % 2 == 0 else list(runs)[::-1]
        for name in names:
            if name in failures:
                continue
            label = f"round {round_index + 1}: {name:<13}"
            measure = (
                functools.partial(forward_floor_run, frames, records)
                if name == "forward floor"
                else functools.partial(
                    forward_adapter_run,
                    frames,
                    records,
                    log_level,
                    peaks[name],
                    pure_python=name == PURE_PYTHON,
                )
            )
            try:
                run, others = measured_quietly(measure, label, patience)
            except BenchError as error:
                failures[name] = str(error)
                print(f"  {name} FAILED: {error}", flush=True)
                continue
            runs[name].append(run)
            others_share[name].append(others)
            print(
                f"    {label} {run.rate(records):>10,.0f} records/s  ({run.seconds:.2f}s, "
                f"sent in {run.send_seconds:.2f}s, {run.records_out:,} out; "
                f"others used {others:.0%} of the CPUs)",
                flush=True,
            )
    floor_rate = median([run.rate(records) for run in runs["forward floor"]])
    summaries: list[dict[str, Any]] = []
    for name, measured in runs.items():
        if not measured:
            continue
        rate = median([run.rate(records) for run in measured])
        slopes = [run.slope_rate for run in measured if run.slope_rate is not None]
        summaries.append(
            {
                "name": name,
                "records_per_second": [round(run.rate(records)) for run in measured],
                "median_records_per_second": round(rate),
                "median_10_90_slope": round(median(slopes)) if slopes else None,
                "ratio_vs_floor": round(rate / floor_rate, 3) if runs["forward floor"] else None,
                "records_out": [run.records_out for run in measured],
                "peak_rss_mb": max(peaks[name]) / 1024 if peaks[name] else None,
                "others_cpu_share_per_round": [round(x, 3) for x in others_share[name]],
            }
        )
    print("\n== Forward input (PackedForward, one connection)")
    print_table(
        [
            "contestant",
            "records/s per round",
            "median",
            "10-90% slope",
            "vs floor",
            "peak RSS MB",
            "others max",
        ],
        [
            [
                s["name"],
                " ".join(f"{rate / 1000:.0f}k" for rate in s["records_per_second"]),
                f"{s['median_records_per_second']:,}",
                f"{s['median_10_90_slope']:,}" if s["median_10_90_slope"] else "-",
                f"{s['ratio_vs_floor']:.2f}" if s["ratio_vs_floor"] is not None else "-",
                f"{s['peak_rss_mb']:.1f}" if s["peak_rss_mb"] is not None else "-",
                f"{max(s['others_cpu_share_per_round']):.0%}",
            ]
            for s in summaries
        ],
    )
    return {
        "records": records,
        "batch": FORWARD_BATCH,
        "bytes": size,
        "contestants": summaries,
        "failures": failures,
    }


# --- outputs: Forward input -> one output, each into a destination that takes everything ----

OUTPUT_CONTESTANTS = ("forward://", "http:// (NDJSON)", "otlp protobuf", "otlp json", "cloudwatch://")
OTLP_TARGET_RATIO = 0.5
"""The OTLP output's rate, at least this fraction of the Forward output's in the same run."""
DOWN_BUFFER_MAX = 4 * 1024 * 1024
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def output_env(name: str, port: int) -> dict[str, str]:
    base = f"{LOOPBACK}:{port}"
    if name == "forward://":
        return {"LOGADAPTER_OUTPUTS": f"forward://{base}"}
    if name == "http:// (NDJSON)":
        return {"LOGADAPTER_OUTPUTS": f"http://{base}/ingest"}
    if name.startswith("otlp"):
        encoding = name.split()[1]
        return {"LOGADAPTER_OUTPUTS": f"otlp+http://{base}", "LOGADAPTER_OTLP_ENCODING": encoding}
    return {
        **FAKE_AWS,
        "LOGADAPTER_OUTPUTS": "cloudwatch:///bench/logs",
        "LOGADAPTER_CLOUDWATCH_REGION": "us-east-1",
        "LOGADAPTER_CLOUDWATCH_ENDPOINT": f"http://{base}",
    }


def output_run(
    name: str, frames: Sequence[bytes], records: int, log_level: str, peak: list[int]
) -> ForwardRun:
    port = free_port()
    mode = "forward" if name == "forward://" else "http"
    body = "" if name == "otlp protobuf" else "{}"  # an empty ExportLogsServiceResponse
    argv = [sys.executable, "-m", "bench.log_destination", "--mode", mode, "--listen", str(port),
            "--body", body]
    with ManagedProcess("destination", argv, env=sidecar_env({}), stdout=subprocess.DEVNULL) as dst:
        dst.wait_port(port)
        return forward_adapter_run(
            frames, records, log_level, peak, pure_python=False, output_env=output_env(name, port)
        )


def destination_down_run(frames: Sequence[bytes], log_level: str) -> dict[str, Any]:
    """OTLP output to a closed port, a 4 MiB buffer: how much memory while the input is held
    back (the sender blocks once the buffer is full)."""
    port, admin_port, dead = free_port(), free_port(), free_port()
    env = sidecar_env(
        {
            "LOGADAPTER_INPUTS": "forward",
            "LOGADAPTER_FORWARD_LISTEN": f"{LOOPBACK}:{port}",
            "LOGADAPTER_OUTPUTS": f"otlp+http://{LOOPBACK}:{dead}",
            "LOGADAPTER_BUFFER_MAX": str(DOWN_BUFFER_MAX),
            "LOGADAPTER_ADMIN_LISTEN": f"{LOOPBACK}:{admin_port}",
            "SIDECAR_LOG_LEVEL": "error" if log_level == "info" else log_level,
        }
    )
    argv = [sys.executable, "-m", "sidecars", "log-adapter"]
    with ManagedProcess("log-adapter", argv, env=env, stdout=subprocess.DEVNULL) as adapter:
        admin = f"http://{LOOPBACK}:{admin_port}"
        adapter.wait_http_ok(admin + "/readyz")
        def send_until_stopped() -> None:
            with contextlib.suppress(OSError):  # the adapter is stopped while the send blocks
                send_frames(port, frames)

        sender = threading.Thread(target=send_until_stopped, daemon=True)
        sender.start()
        buffered, stable_since = -1, time.perf_counter()
        while time.perf_counter() - stable_since < 3.0 and sender.is_alive():
            status = json.loads(http_request(admin + "/status")[2])
            now_buffered = int(status["buffer"]["bytes"])
            if now_buffered != buffered:
                buffered, stable_since = now_buffered, time.perf_counter()
            time.sleep(0.2)
        peak_kib = status_kib(adapter.pid, "VmHWM")
        return {
            "buffer_max_bytes": DOWN_BUFFER_MAX,
            "buffered_bytes": buffered,
            "sender_blocked": sender.is_alive(),
            "peak_rss_mb": round(peak_kib / 1024, 1),
        }


def bench_outputs(records: int, rounds: int, log_level: str, patience: Patience) -> dict[str, Any]:
    frames = packed_forward_frames(records)
    runs: dict[str, list[ForwardRun]] = {name: [] for name in OUTPUT_CONTESTANTS}
    peaks: dict[str, list[int]] = {name: [] for name in OUTPUT_CONTESTANTS}
    failures: dict[str, str] = {}
    for round_index in range(rounds):
        names = list(runs) if round_index % 2 == 0 else list(runs)[::-1]
        for name in names:
            if name in failures:
                continue
            label = f"round {round_index + 1}: {name:<17}"
            measure = functools.partial(output_run, name, frames, records, log_level, peaks[name])
            try:
                run, others = measured_quietly(measure, label, patience)
            except BenchError as error:
                failures[name] = str(error)
                print(f"  {name} FAILED: {error}", flush=True)
                continue
            runs[name].append(run)
            print(
                f"    {label} {run.rate(records):>10,.0f} records/s  ({run.seconds:.2f}s; "
                f"others used {others:.0%} of the CPUs)",
                flush=True,
            )
    forward_rate = median([run.rate(records) for run in runs["forward://"]])
    summaries: list[dict[str, Any]] = [
        {
            "name": name,
            "records_per_second": [round(run.rate(records)) for run in measured],
            "median_records_per_second": round(median([run.rate(records) for run in measured])),
            "ratio_vs_forward_output": round(
                median([run.rate(records) for run in measured]) / forward_rate, 3
            )
            if forward_rate
            else None,
            "peak_rss_mb": max(peaks[name]) / 1024 if peaks[name] else None,
        }
        for name, measured in runs.items()
        if measured
    ]
    down = destination_down_run(frames, log_level)
    print("\n== Outputs (Forward input -> one output, a destination that takes everything)")
    print_table(
        ["output", "records/s per round", "median", "vs forward://", "peak RSS MB"],
        [
            [
                s["name"],
                " ".join(f"{rate / 1000:.0f}k" for rate in s["records_per_second"]),
                f"{s['median_records_per_second']:,}",
                f"{s['ratio_vs_forward_output']:.2f}" if s["ratio_vs_forward_output"] else "-",
                f"{s['peak_rss_mb']:.1f}" if s["peak_rss_mb"] is not None else "-",
            ]
            for s in summaries
        ],
    )
    print(
        f"  OTLP destination down, buffer bound {DOWN_BUFFER_MAX / 2**20:.0f} MiB: "
        f"{down['buffered_bytes'] / 2**20:.1f} MiB buffered, sender blocked: "
        f"{down['sender_blocked']}, peak RSS {down['peak_rss_mb']} MB"
    )
    return {"records": records, "contestants": summaries, "down": down, "failures": failures}


# --- main -----------------------------------------------------------------------------------


def find(summaries: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((s for s in summaries if s["name"] == name), None)


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    print(f"\n-- {title}", flush=True)
    yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller corpus, fewer rounds")
    parser.add_argument(
        "--part",
        action="append",
        choices=("stdin", "forward", "outputs"),
        help="run only these parts (repeatable); default: both",
    )
    parser.add_argument("--lines", type=int, help="corpus lines (default 500k, quick 100k)")
    parser.add_argument("--records", type=int, help="Forward records (default 300k, quick 100k)")
    parser.add_argument("--rounds", type=int, help="rounds per contestant (default 3, quick 2)")
    parser.add_argument(
        "--log-level",
        default="info",
        help="SIDECAR_LOG_LEVEL for the adapter (default: info, the default)",
    )
    parser.add_argument(
        "--patience",
        type=float,
        default=120.0,
        help="seconds the run may spend in all waiting for other work to leave the CPUs "
        "idle and re-running noisy runs (default 120; 0: never wait)",
    )
    args = parser.parse_args(argv)
    stop_children_on_sigterm()
    build_sidecars()
    patience = Patience(args.patience)
    parts = args.part or ["stdin", "forward", "outputs"]
    rounds = args.rounds or (2 if args.quick else 3)
    lines = args.lines or (100_000 if args.quick else 500_000)
    records = args.records or (100_000 if args.quick else 300_000)
    results: dict[str, Any] = {"rounds": rounds, "log_level": args.log_level}
    targets: list[Target] = []
    failed = False
    results["cpu_busy_before"] = round(warn_if_busy("before the run"), 3)
    started = time.perf_counter()
    if "stdin" in parts:
        with section("mixed corpus, stdin -> stdout"):
            stdin = bench_stdin(lines, rounds, args.log_level, patience)
        results["stdin"] = stdin
        failed |= bool(stdin["failures"])
        adapter = find(stdin["contestants"], "log-adapter")
        targets.append(
            Target(
                "mixed corpus lines/s, one core",
                adapter["median_lines_per_second"] if adapter else None,
                LINES_TARGET,
                at_least=True,
            )
        )
    if "forward" in parts:
        with section("Forward input"):
            forward = bench_forward(records, rounds, args.log_level, patience)
        results["forward"] = forward
        failed |= bool(forward["failures"])
        adapter = find(forward["contestants"], "log-adapter")
        targets.append(
            Target(
                "Forward input records/s",
                adapter["median_records_per_second"] if adapter else None,
                FORWARD_TARGET,
                at_least=True,
            )
        )
    if "outputs" in parts:
        with section("outputs"):
            outputs = bench_outputs(records, rounds, args.log_level, patience)
        results["outputs"] = outputs
        failed |= bool(outputs["failures"])
        otlp = find(outputs["contestants"], "otlp protobuf")
        targets.append(
            Target(
                "OTLP output rate / Forward output rate",
                otlp["ratio_vs_forward_output"] if otlp else None,
                OTLP_TARGET_RATIO,
                at_least=True,
            )
        )
    finish_run("logs", results, targets, started, patience)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
