"""One JSON line per request on stdout, written cheaply and never ahead of an answer.

structlog's processor chain per request would cost more than proxying the request, and so
would a dict through orjson: lines are formatted straight to bytes by one ``%`` per line and
buffered, as nginx's ``access_log ... buffer= flush=`` does: the buffer is written when it
holds ``buffer_size`` bytes or ``flush_interval`` after its first line, whichever comes
first, and always after the socket writes of the loop iteration (``EndOfIteration.defer``).
What is the same for every line of an iteration (the timestamp, the sidecar) is formatted
once per iteration, as nginx caches its time per event loop turn: lines answered in one
iteration share a timestamp, their durations stay exact. Values a client chose are escaped as
JSON strings; the request ids the sidecar makes need no escaping, and user agents repeat, so
their JSON form is cached.

The writes themselves are made by an ``Output``: in the process, ``StdoutWriter``, the one
writer of stdout (the process log's lines go through it too,
``observability.ProcessLogStream``), so that a stdout that does not take lines (a full pipe)
never blocks the event loop and no line is split by another (a regular file is the
exception: written at once, as nginx writes its ``access_log``). What it cannot take is dropped,
counted in ``sidecar_access_log_dropped_total`` and reported by an ``access_log_dropped``
line once stdout takes lines again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import os
import re
import resource
import select
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Final, Protocol

import orjson

from sidecars import observability as obs
from sidecars.proxy.batch import EndOfIteration

if TYPE_CHECKING:
    from sidecars.proxy.exchange import Exchange

# Bytes that need escaping in a JSON string, or may not be UTF-8.
_UNSAFE: Final = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')
# The order of every other sidecar event (observability._Envelope), then the request's fields.
_ENVELOPE: Final = (
    b'{"timestamp":"%b.%06dZ","level":"%b","sidecar":%b,"logger":"sidecars.proxy.access",'
)
_PREFIX: Final = b'"event":"access",'
_LINE: Final = (
    b'%b"upstream":%b,"method":"%b","path":"%b","status":%b,"attempts":%b,"duration":%.6f,'
    b'"bytes":%b,"request_id":"%b","remote_addr":"%b","user_agent":%b%b'
)
_END: Final = b"}\n"
_DROPPED: Final = b'"event":"access_log_dropped","lines":%d,"reason":"%b"}\n'
# With trace context: the trace, the sidecar's span, and the client's span (null: a new trace).
_TRACE_END: Final = b',"trace_id":"%b","span_id":"%b","parent_span_id":%b}\n'
# Small numbers as text: a list index and %b cost less than %d.
_NUMBERS: Final = [b"%d" % n for n in range(1024)]
# Distinct user agents whose JSON form is kept; past it the cache starts again.
_USER_AGENTS_MAX: Final = 256
# While stdout takes nothing, this many buffers may wait before lines are dropped.
PENDING_BUFFERS: Final = 16
# How long the lines still buffered at exit may take to be written.
CLOSE_TIMEOUT: Final = 2.0


def json_string(value: bytes) -> bytes:
    """``value`` as a JSON string (bytes that are not UTF-8 become U+FFFD)."""
    if _UNSAFE.search(value) is None:
        return b'"' + value + b'"'
    return orjson.dumps(value.decode("utf-8", "replace"))


def _json_inner(value: bytes) -> bytes:
    """``value`` as the inside of a JSON string."""
    return orjson.dumps(value.decode("utf-8", "replace"))[1:-1]


def _trace_end(exchange: Exchange) -> bytes:
    parent = exchange.parent_id
    return _TRACE_END % (
        exchange.trace_id,
        exchange.span_id,
        b"null" if parent is None else b'"' + parent + b'"',
    )


class Output(Protocol):
    """Where buffers of whole lines go."""

    def put(self, data: bytes) -> bool:
        """Take ``data`` without blocking; False when it cannot (the lines are lost)."""
        ...

    def close(self, timeout: float) -> int:
        """Write what was taken, within ``timeout`` seconds; the bytes left unwritten."""
        ...


class Timers(Protocol):
    """The part of the event loop the flush timer needs (a test drives its own clock)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle: ...


class AccessLog:
    __slots__ = (
        "_buffer_size",
        "_dropped",
        "_dropped_total",
        "_end_of_iteration",
        "_flush_interval",
        "_lines",
        "_output",
        "_prefix",
        "_second",
        "_second_text",
        "_sidecar",
        "_size",
        "_timer",
        "_timers",
        "_user_agents",
        "_wall_clock",
    )

    def __init__(
        self,
        end_of_iteration: EndOfIteration,
        timers: Timers,
        sidecar: str,
        output: Output,
        *,
        buffer_size: int = 64 * 1024,
        flush_interval: float = 0.1,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._end_of_iteration = end_of_iteration
        self._timers = timers
        self._sidecar = orjson.dumps(sidecar)
        self._output = output
        self._buffer_size = buffer_size
        self._flush_interval = flush_interval
        self._wall_clock = wall_clock
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._prefix = b""  # of this iteration's lines; empty: not formatted yet
        self._second = -1
        self._second_text = b""
        self._user_agents: dict[bytes, bytes] = {}
        self._dropped = 0  # lines dropped since the last access_log_dropped line
        self._dropped_total = obs.ACCESS_LOG_DROPPED.labels(sidecar, "stdout_full")

    def write(self, exchange: Exchange, status: int, duration: float) -> None:
        prefix = self._prefix
        if not prefix:
            prefix = self._prefix = self._envelope(b"info") + _PREFIX
            self._end_of_iteration.defer(self._end_iteration)
        target = exchange.target
        if _UNSAFE.search(target) is not None:
            target = _json_inner(target)
        user_agent = exchange.user_agent
        if user_agent is not None:
            user_agent = self._user_agents.get(user_agent) or self._user_agent(user_agent)
        attempt = exchange.attempt
        sent = exchange.bytes_sent
        line = _LINE % (
            prefix,
            exchange.route.json_name,
            exchange.method,
            target,
            _NUMBERS[status],  # 100-599, or nginx's 499
            _NUMBERS[attempt] if attempt < 1024 else b"%d" % attempt,
            duration,
            _NUMBERS[sent] if sent < 1024 else b"%d" % sent,
            (
                _json_inner(exchange.request_id)
                if exchange.request_id_given and _UNSAFE.search(exchange.request_id)
                else exchange.request_id
            ),
            exchange.client.peer,
            b"null" if user_agent is None else user_agent,
            _END if not exchange.span_id else _trace_end(exchange),
        )
        self._lines.append(line)
        self._size += len(line)

    def _end_iteration(self) -> None:
        """After the iteration's sends: the next iteration's lines get a new timestamp; a
        full buffer is written, else the timer makes sure it is soon."""
        self._prefix = b""
        if self._size >= self._buffer_size:
            self.flush()
        elif self._timer is None and (self._lines or self._dropped):
            self._timer = self._timers.call_later(self._flush_interval, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._end_of_iteration.defer(self.flush)  # after the sends of the iteration

    def flush(self) -> None:
        """Hand the buffered lines to the output now (with the report of lines lost before,
        which is retried every flush interval until the output takes it)."""
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        lines = self._lines
        if not lines and not self._dropped:
            return
        self._lines = []
        self._size = 0
        data = b"".join(lines)
        if self._dropped:
            data = self._envelope(b"warn") + _DROPPED % (self._dropped, b"stdout_full") + data
        if self._output.put(data):
            self._dropped = 0
            return
        self._dropped += len(lines)
        self._dropped_total.inc(len(lines))
        self._timer = self._timers.call_later(self._flush_interval, self._timer_fired)

    def close(self) -> tuple[int, int]:
        """Write every line still buffered (at exit): the number of bytes that could not be
        written within CLOSE_TIMEOUT (stdout stuck), and of lines the output refused and
        that no later ``access_log_dropped`` line will report."""
        self.flush()
        return self._output.close(CLOSE_TIMEOUT), self._dropped

    def _envelope(self, level: bytes) -> bytes:
        now = self._wall_clock()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        return _ENVELOPE % (self._second_text, int((now - second) * 1e6), level, self._sidecar)

    def _user_agent(self, value: bytes) -> bytes:
        cache = self._user_agents
        if len(cache) >= _USER_AGENTS_MAX:
            cache.clear()
        text = cache[value] = json_string(value)
        return text


# How ``StdoutWriter`` writes on the caller's thread (``_write_now``), by what stdout is.
_NOWAIT: Final = 0  # a pipe or socket: pwritev2(RWF_NOWAIT) writes what fits, never blocking
_PLAIN: Final = 1  # a regular file: a write no reader holds up (as nginx's access_log)
_POLL: Final = 2  # RWF_NOWAIT refused (a FIFO, a terminal, a kernel): a polled PIPE_BUF write
_NONE: Final = 3  # no file descriptor (a test's stream): the thread writes everything


class StdoutWriter:
    """The process's one stdout writer: access lines (``AccessLog``'s buffers) and process
    log lines (``observability.ProcessLogStream``) alike are ``put`` whole. A line is written
    at once on the caller's thread while nothing waits and stdout takes it without blocking
    (an anonymous pipe, what container runtimes give, or a socket by
    ``pwritev2(RWF_NOWAIT)``, which writes what fits, once a probe found the kernel honours
    it; elsewhere, a FIFO or a terminal say, a polled write of at most ``PIPE_BUF`` bytes);
    what stdout does not take at once is written by a thread of its own, so that a stdout
    that does not take lines (a full pipe nobody reads) stalls that thread and never the
    event loop, and no line is ever split by another writer's bytes. A regular file is
    written at once whatever the size, as nginx writes its ``access_log``: no reader holds it
    up, but a stuck file system under it stalls the loop. Writing at once keeps the order of
    lines and answers (a line logged before an answer is on stdout before the answer is
    sent) and costs no thread hand-over, which was a tenth of the proxy's CPU at full load.

    At most ``max_pending`` bytes wait for the thread (being written included); past it
    ``put`` refuses. A failed write (stdout closed) loses its lines, counted by reason
    ``write_error``. Once ``close`` has written everything, ``put`` writes at once (the loop
    is gone: the last process log lines, ``stopped``, are kept); if stdout stayed stuck, it
    refuses."""

    def __init__(self, sidecar: str, max_pending: int, stream: BinaryIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._fd = _fileno(self._stream)
        self._how = _write_mode(self._fd)
        self._writable = select.poll()  # the caller's (under the lock, nothing pending)
        self._room = select.poll()  # the thread's, and the writes once closed
        if self._fd >= 0:
            self._writable.register(self._fd, select.POLLOUT)
            self._room.register(self._fd, select.POLLOUT)
        self._max_pending = max_pending
        self._ready = threading.Condition()
        self._queue: deque[bytes] = deque()
        self._pending = 0  # bytes queued or being written by the thread
        self._closing = False
        self._closed = False  # closed with everything written: later puts write at once
        self._write_errors = obs.ACCESS_LOG_DROPPED.labels(sidecar, "write_error")
        self._writer = threading.Thread(target=self._run, name="stdout", daemon=True)
        self._writer.start()

    def put(self, data: bytes) -> bool:
        with self._ready:
            if self._closed:
                self._write(data)
                return True
            if self._closing:
                return False  # stdout stuck at exit: counted as dropped, reported at exit
            if not self._pending:
                written = self._write_now(data)
                if written == len(data):
                    return True
                if written:
                    data = data[written:]  # the rest waits for the thread, in order
            # One batch larger than the bound is taken when nothing waits: refusing it would
            # drop it on a healthy stdout.
            elif self._pending + len(data) > self._max_pending:
                return False
            self._queue.append(data)
            self._pending += len(data)
            self._ready.notify()
        return True

    @property
    def closing(self) -> bool:
        return self._closing

    def close(self, timeout: float) -> int:
        """Write what was taken, within ``timeout`` seconds; the bytes left unwritten. A
        second call waits no more (it returns what is still unwritten)."""
        with self._ready:
            if self._closing:
                return 0 if self._closed else self._pending
            self._closing = True
            self._ready.notify()
        self._writer.join(timeout)
        with self._ready:
            self._closed = not self._writer.is_alive()
            return self._pending

    def _write_now(self, data: bytes) -> int:
        """Write what stdout takes of ``data`` without blocking; the bytes taken (all of
        them when the write failed: those lines are lost, and counted)."""
        how = self._how
        try:
            if how == _NOWAIT:
                try:
                    return os.pwritev(self._fd, (data,), -1, _RWF_NOWAIT)
                except BlockingIOError:
                    return 0
                except OSError:
                    # Refused (EOPNOTSUPP: a FIFO, a terminal, an older kernel; EPERM or
                    # ENOSYS: a seccomp profile without pwritev2) or failed: the polled
                    # path from now on, whose own write reports a real failure.
                    self._how = how = _POLL
            if how == _PLAIN:
                self._write(data)
                return len(data)
            if (
                how == _POLL
                and len(data) <= select.PIPE_BUF
                and self._writable.poll(0) == [(self._fd, select.POLLOUT)]
            ):
                return os.write(self._fd, data)  # at most PIPE_BUF, room for it: whole
        except BlockingIOError:
            return 0  # stdout opened non-blocking by another process, and full: the thread
        except OSError:
            self._write_errors.inc(data.count(b"\n"))
            return len(data)
        return 0

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closing:
                    self._ready.wait()
                if not self._queue:
                    return
                data = b"".join(self._queue)
                self._queue.clear()
            self._write(data)
            with self._ready:
                self._pending -= len(data)

    def _write(self, data: bytes) -> None:
        """Write ``data`` whole, blocking: straight to the file descriptor when there is
        one, so that a write stuck in a full pipe holds no lock of ``sys.stdout``'s buffer
        (the interpreter's exit flushes it, and would abort waiting for that lock) and a
        failed write leaves nothing buffered to fail again at exit. The lines it could not
        write are counted lost."""
        written = 0
        try:
            if self._fd < 0:
                self._stream.write(data)
                self._stream.flush()
                return
            # (Offsets, not a shrinking memoryview: mypyc's build wrote the data twice.)
            while written < len(data):
                try:
                    written += os.write(self._fd, data[written:] if written else data)
                except BlockingIOError:  # a stdout some process made non-blocking: wait
                    self._room.poll()
        except (OSError, ValueError):
            self._write_errors.inc(data.count(b"\n", written))


_RWF_NOWAIT: Final[int] = getattr(os, "RWF_NOWAIT", 0)


def _write_mode(fd: int) -> int:
    """How ``StdoutWriter`` may write to ``fd`` on the caller's thread."""
    if fd < 0:
        return _NONE
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return _PLAIN
    except OSError:
        return _NONE
    return _NOWAIT if _nowait_honoured() else _POLL


_NOWAIT_HONOURED: Final[list[bool]] = []  # the probe's answer, once asked


def _nowait_honoured() -> bool:
    """Whether this kernel's pipes honour ``RWF_NOWAIT`` (a kernel that took the flag and
    blocked anyway would stall the loop: gVisor's pipes ignore write flags). Asked once: a
    thread writes two pages into a pipe of one; honoured, it is back at once with the page
    that fitted; else it is let go by reading the pipe."""
    if _NOWAIT_HONOURED:
        return _NOWAIT_HONOURED[0]
    honoured = False
    if _RWF_NOWAIT:
        read_end, write_end = os.pipe()
        try:
            page = resource.getpagesize()
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, page)
            outcome: list[int] = []
            probe = threading.Thread(
                target=_probe_write, args=(write_end, bytes(2 * page), outcome), daemon=True
            )
            probe.start()
            probe.join(1.0)
            os.set_blocking(read_end, False)  # (the probe may end between check and read)
            while probe.is_alive():  # blocked: the flag was ignored
                with contextlib.suppress(BlockingIOError):
                    os.read(read_end, 2 * page)
                probe.join(0.1)
            honoured = bool(outcome) and 0 <= outcome[0] < 2 * page
        except OSError:
            honoured = False
        finally:
            os.close(read_end)
            os.close(write_end)
    _NOWAIT_HONOURED.append(honoured)
    return honoured


def _probe_write(fd: int, data: bytes, outcome: list[int]) -> None:
    try:
        outcome.append(os.pwritev(fd, (data,), -1, _RWF_NOWAIT))
    except BlockingIOError:
        outcome.append(0)
    except OSError:
        outcome.append(-1)


def _fileno(stream: BinaryIO) -> int:
    """The file descriptor under ``stream`` when it has no buffered bytes of its own to
    write first (stdout's buffer is flushed after every write here); -1: none."""
    try:
        stream.flush()
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return -1


def close_output(stdout: StdoutWriter, access_log: AccessLog | None, sidecar: str) -> None:
    """Write the lines still buffered (access and process log) before exit; if stdout takes
    nothing for ``CLOSE_TIMEOUT``, the loss is reported on stderr (stdout is what is
    stuck)."""
    if access_log is not None:
        unwritten, dropped = access_log.close()  # its output is ``stdout``: closed too
    else:
        unwritten, dropped = stdout.close(CLOSE_TIMEOUT), 0
    if unwritten or dropped:
        event = {
            "timestamp": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%S.%fZ}",
            "level": "warn",
            "sidecar": sidecar,
            "logger": "sidecars.proxy.access",
            "event": "access_log_unwritten",
            "bytes": unwritten,
            "lines_dropped": dropped,
        }
        sys.stderr.write(orjson.dumps(event).decode() + "\n")
        sys.stderr.flush()


_STDOUT: Final[list[StdoutWriter]] = []  # the process's one stdout writer, once made


def stdout_output(sidecar: str, buffer_size: int) -> StdoutWriter:
    """The process's one stdout writer (made at the first call: the process log's set-up;
    the access log takes the same), bounded at ``PENDING_BUFFERS`` access-log buffers."""
    if not _STDOUT:
        _STDOUT.append(StdoutWriter(sidecar, PENDING_BUFFERS * max(buffer_size, 4096)))
    return _STDOUT[0]
