"""The demo's child processes: start, wait until ready, stop with SIGTERM (then SIGKILL).

Each child is the real ``python -m ...`` command. It runs in its own session, so a Ctrl-C in
the terminal reaches only the demo, which then stops the children in order (app first, log
adapter last) after reading their final numbers; on Linux a child also gets SIGTERM if the
demo itself dies. Output goes to one file per stream in the demo's work directory; a stream
the demo reads (the app's logs, the adapter's records) is copied to its file as it is read.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import aiohttp

Stream = Literal["stdout", "stderr"]
# Variables of the sidecars and example apps: a user's own settings must not leak into the
# demo's children (an unknown BREAKER_* variable is a configuration error by design).
_OWNED_PREFIXES = ("BREAKER_", "AMBASSADOR_", "LOGADAPTER_", "SIDECAR_", "APP_", "FLAKY_")
_PR_SET_PDEATHSIG = 1


class ChildFailed(Exception):
    """A child exited or never became ready; carries the end of its output."""

    def __init__(self, name: str, detail: str, output_tail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail
        self.output_tail = output_tail


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    module_args: tuple[str, ...]  # what follows ``python -m``
    env: Mapping[str, str]
    ready_url: str
    piped: frozenset[Stream] = field(default_factory=frozenset)


def child_environment(own: Mapping[str, str]) -> dict[str, str]:
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_OWNED_PREFIXES) and not key.startswith("SIDECARS_DEMO_")
    }
    return {**inherited, "PYTHONUNBUFFERED": "1", **own}


# Resolved here, in the parent: the child between fork and exec should only make the call.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the demo dies, even by SIGKILL (Linux)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    def __init__(self, spec: ChildSpec, log_dir: Path) -> None:
        self.spec = spec
        self.log_dir = log_dir
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0

    def log_path(self, stream: Stream) -> Path:
        return self.log_dir / f"{self.spec.name}.{stream}.log"

    async def start(self) -> None:
        files: dict[Stream, IO[bytes]] = {}
        for stream in ("stdout", "stderr"):
            if stream not in self.spec.piped:
                files[stream] = self.log_path(stream).open("wb")
        try:
            self.started_at = time.monotonic()
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                *self.spec.module_args,
                env=child_environment(self.spec.env),
                cwd=self.log_dir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=files.get("stdout", asyncio.subprocess.PIPE),
                stderr=files.get("stderr", asyncio.subprocess.PIPE),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as error:
            raise ChildFailed(self.spec.name, f"could not start: {error}", "") from error
        finally:
            for handle in files.values():
                handle.close()

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    async def lines(self, stream: Stream) -> AsyncIterator[bytes]:
        """Lines of a piped stream until EOF, each also appended to the stream's log file."""
        assert self.process is not None
        reader = self.process.stdout if stream == "stdout" else self.process.stderr
        assert reader is not None
        with self.log_path(stream).open("ab") as copy:
            while line := await reader.readline():
                copy.write(line)
                yield line

    def output_tail(self, lines: int = 12) -> str:
        parts = []
        for stream in ("stdout", "stderr"):
            path = self.log_path(stream)
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    parts.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(parts) or "(no output)"

    def failure(self, detail: str) -> ChildFailed:
        return ChildFailed(self.spec.name, detail, self.output_tail())

    async def wait_ready(self, session: aiohttp.ClientSession, within: float) -> float:
        """Poll the readiness URL until 200; seconds from start to ready."""
        assert self.process is not None
        deadline = time.monotonic() + within
        while True:
            if self.process.returncode is not None:
                raise self.failure(f"exited with code {self.process.returncode} while starting")
            try:
                async with session.get(self.spec.ready_url) as response:
                    if response.status == 200:
                        return time.monotonic() - self.started_at
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise self.failure(f"not ready at {self.spec.ready_url} after {within:g}s")
            await asyncio.sleep(0.05)  # polling interval

    async def stop(self, grace: float) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; the exit code (<0: signal)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode
