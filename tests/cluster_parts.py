"""Real parts for the cluster tests: replicas on distinct loopback addresses (127.0.0.2, .3,
.4 all route on Linux's ``lo``) sharing one port, and a real DNS server (dnsmasq) on a
loopback port serving their A and SRV records, reloaded with SIGHUP when a test changes them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.asyncresolver
import dns.exception
from proxy_parts import ScriptedUpstream, eventually

REPLICA_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def shared_port(hosts: tuple[str, ...]) -> int:
    """A port free on every one of ``hosts`` (DNS names give one port to all endpoints)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        free = True
        for host in hosts[1:]:
            with socket.socket() as other:
                try:
                    other.bind((host, port))
                except OSError:
                    free = False
        if free:
            return port
    raise AssertionError("no port free on every replica address")


Replicas = Callable[..., Awaitable[list[ScriptedUpstream]]]


class DnsmasqExited(AssertionError):
    """dnsmasq stopped (most likely its port was taken meanwhile)."""


class Dnsmasq:
    """A dnsmasq serving ``names`` (A records, from a hosts file re-read on SIGHUP) and fixed
    SRV records, with a 1 s TTL, on a loopback UDP/TCP port."""

    def __init__(self, directory: Path, records: dict[str, list[str]], srv: list[str]) -> None:
        self.directory = directory
        self.hosts_file = directory / "hosts"
        self._write(records)  # before the start: a SIGHUP that early would kill dnsmasq
        self.port = _free_udp_port()
        self.log_file = directory / "dnsmasq.log"
        conf = directory / "dnsmasq.conf"
        conf.write_text("".join(f"srv-host={record}\n" for record in srv))
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    DNSMASQ,
                    "--keep-in-foreground",
                    f"--port={self.port}",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    "--no-resolv",
                    "--no-hosts",
                    f"--addn-hosts={self.hosts_file}",
                    f"--conf-file={conf}",
                    "--local-ttl=1",
                    "--pid-file=",
                    *(["--user=root"] if os.geteuid() == 0 else []),
                    "--log-facility=-",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write(self, records: dict[str, list[str]]) -> None:
        self.hosts_file.write_text(
            "".join(f"{ip} {name}\n" for name, ips in records.items() for ip in ips)
        )

    async def set(self, records: dict[str, list[str]]) -> None:
        """Serve these A records from now on (SIGHUP re-reads the hosts file)."""
        self._write(records)
        self.process.send_signal(signal.SIGHUP)
        await self.serving(records)

    async def serving(self, records: dict[str, list[str]]) -> None:
        """Wait until every name of ``records`` is answered as given."""
        for name, ips in records.items():
            await eventually(
                lambda name=name, ips=ips: self._answers(name, sorted(ips)),  # type: ignore[misc]
                f"dnsmasq to serve {name}",
            )

    async def _answers(self, name: str, expected: list[str]) -> bool:
        if self.process.poll() is not None:
            raise DnsmasqExited(self.log_file.read_text(errors="replace"))
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 1.0
        try:
            answer = await resolver.resolve(name, "A")
        except dns.exception.DNSException:
            return False
        return sorted(record.address for record in answer) == expected

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        return int(udp.getsockname()[1])


DnsFactory = Callable[..., Awaitable[Dnsmasq]]


