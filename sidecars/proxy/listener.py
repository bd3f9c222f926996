"""Data ports that keep a reserve of file descriptors for the admin plane.

When a process runs out of descriptors, libuv (under uvloop) meets EMFILE by accepting and
closing every waiting connection, the admin port's included, and says nothing: a liveness
probe then sees its connection closed unanswered. So data ports accept here instead, as
HAProxy and nginx do: a port stops accepting while fewer than the reserve of descriptors are
free (connections wait in the kernel's backlog meanwhile) and starts again once twice the
reserve is free. The admin port keeps libuv's accept, and with it the reserve.

Linux hands out the lowest free descriptor, so an accepted socket numbered ``n`` means at
least ``n`` are in use: one comparison per accept, no count. Counting the open ones (a
directory listing) is left to the checks while paused.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
from collections.abc import Callable
from typing import Any

from sidecars.envparse import HostPort
from sidecars.observability import ACCEPT_ERRORS, ACCEPT_PAUSES, LogThrottle, get_logger

log = get_logger("sidecars.proxy")

_ACCEPTS_PER_WAKE = 64
_RESUME_CHECK_SECONDS = 0.25
_FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


class DescriptorBudget:
    """The process's descriptor limit (soft ``RLIMIT_NOFILE``) and the reserve kept free of
    data connections: a tenth of the limit, from 16 to 256."""

    def __init__(self) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
        self.reserve = max(16, min(256, self.limit // 10))

    def short(self, newest: int) -> bool:
        """Whether the reserve is reached, judged by the newest descriptor's number."""
        return newest >= self.limit - self.reserve

    def has_room(self) -> bool:
        return self.open_descriptors() < self.limit - 2 * self.reserve

    def open_descriptors(self) -> int:
        """How many are open; the limit when counting fails (listing them takes one)."""
        try:
            return len(os.listdir(_FD_DIR))
        except OSError:
            return self.limit

    def status(self) -> dict[str, int]:
        return {"limit": self.limit, "reserve": self.reserve, "open": self.open_descriptors()}


def bind(listen: HostPort, backlog: int = 1024) -> list[socket.socket]:
    """Listening sockets for ``listen`` (one per address it resolves to), as
    ``loop.create_server`` binds them."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts connections on ``sock`` for ``factory`` while the descriptor budget allows;
    ``labels`` are the metrics' (sidecar, upstream)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        budget: DescriptorBudget,
        labels: tuple[str, str],
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._budget = budget
        self._labels = labels
        self._pauses = ACCEPT_PAUSES.labels(*labels)
        self._failures_logged = LogThrottle()
        self._pauses_logged = LogThrottle()
        self._connecting: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.accepting = True
        loop.add_reader(sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting; connections already accepted go on."""
        if self._closed:
            return
        self._closed = True
        if self.accepting:
            self._loop.remove_reader(self._sock.fileno())
        self.accepting = False
        self._sock.close()

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError as error:
                self._count_failure(error)  # the client gave up before its turn
                continue
            except OSError as error:
                self._count_failure(error)
                self._pause("accept_failed")
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
            self._connecting.add(task)
            task.add_done_callback(self._connected)
            if self._budget.short(conn.fileno()):
                self._pause("descriptor_reserve")
                return

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self._connecting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warn("accept_setup_failed", upstream=self._labels[1], error=str(task.exception()))

    def _count_failure(self, error: OSError) -> None:
        reason = errno.errorcode.get(error.errno or 0, "unknown")
        ACCEPT_ERRORS.labels(*self._labels, reason).inc()
        held_back = self._failures_logged.due()
        if held_back is not None:
            log.warn("accept_failed", upstream=self._labels[1], reason=reason, held_back=held_back)

    def _pause(self, reason: str) -> None:
        self.accepting = False
        self._loop.remove_reader(self._sock.fileno())
        self._pauses.inc()
        held_back = self._pauses_logged.due()
        if held_back is not None:
            log.warn(
                "accept_paused",
                upstream=self._labels[1],
                reason=reason,
                held_back=held_back,
                **self._budget.status(),
            )
        self._loop.call_later(_RESUME_CHECK_SECONDS, self._try_resume)

    def _try_resume(self) -> None:
        if self._closed:
            return
        if not self._budget.has_room():
            self._loop.call_later(_RESUME_CHECK_SECONDS, self._try_resume)
            return
        self.accepting = True
        self._loop.add_reader(self._sock.fileno(), self._accept)
        if self._pauses_logged.held_back == 0:  # its pause was logged: so is the end of it
            log.info("accept_resumed", upstream=self._labels[1], **self._budget.status())
        self._accept()
