"""Running the example stack's processes the way a pod or task does, for the wiring tests.

``Pod`` starts each process under an optional command prefix (``ip netns exec <ns>``, or a
read-only mount namespace) and stops them in the pod's order; ``NS_CLIENT`` is a tiny HTTP
client run inside the same namespace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Run as `python -c NS_CLIENT <mode> <json>` inside the namespace. Modes: `wait` polls URLs
# until every one answers 200 (exit 1 after 20 s); `calls` runs [method, url, body] steps and
# prints [[status, body], ...] as JSON.
NS_CLIENT = r"""
import json, sys, time, urllib.error, urllib.request

def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return [status, json.loads(raw)]
    except ValueError:
        return [status, raw.decode(errors="replace")]

mode, argument = sys.argv[1], json.loads(sys.argv[2])
if mode == "wait":
    deadline = time.monotonic() + 20
    pending = list(argument)
    while pending:
        try:
            if call("GET", pending[0])[0] == 200:
                pending.pop(0)
                continue
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"not ready: {pending}")
        time.sleep(0.05)
else:
    print(json.dumps([call(*step) for step in argument]))
"""


@dataclass
class PodProcess:
    name: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


@dataclass
class Pod:
    """Processes sharing what a pod shares (a network namespace, volumes), in start order."""

    prefix: list[str]
    workdir: Path
    processes: dict[str, PodProcess] = field(default_factory=dict)

    def start(self, name: str, module_args: list[str], env: dict[str, str]) -> PodProcess:
        stdout = self.workdir / f"{name}.stdout"
        stderr = self.workdir / f"{name}.stderr"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", *module_args],
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        self.processes[name] = PodProcess(name, process, stdout, stderr)
        return self.processes[name]

    def stop(self, *names: str) -> dict[str, int]:
        """SIGTERM the named processes (all, in reverse start order, when none are named)."""
        order = list(names) or list(reversed(self.processes))
        codes = {}
        for name in order:
            process = self.processes[name].process
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name in order:
            process = self.processes[name].process
            try:
                codes[name] = process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes

    def outputs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()}" for p in self.processes.values())

    def kill_all(self) -> None:
        for pod_process in self.processes.values():
            if pod_process.process.poll() is None:
                pod_process.process.kill()
                pod_process.process.wait()
