"""DNS for clusters: A/AAAA and SRV records, with the TTL the answer carries.

With ``P_DNS_SERVERS`` the named servers are asked directly (dnspython's asyncio resolver),
and the records' TTLs are known. Without, addresses come from the system resolver
(getaddrinfo: /etc/hosts, resolv.conf, whatever the container's libc does), which tells no
TTL, so ``P_DNS_TTL`` alone paces re-resolution; SRV records are then asked of the servers in
/etc/resolv.conf.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from sidecars.envparse import HostPort

Address = tuple[int, str]  # (family, ip)
NO_TTL = float("inf")  # the answer told no TTL


class Resolver(Protocol):
    async def addresses(self, host: str) -> tuple[list[Address], float]:
        """The addresses of ``host`` and the shortest TTL of the answer; OSError when none."""
        ...

    async def services(self, name: str) -> tuple[list[tuple[str, int]], float]:
        """SRV records of ``name`` as (target, port), and their TTL; OSError when none."""
        ...


def literal(host: str) -> Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), host


class DnsResolver:
    def __init__(self, loop: asyncio.AbstractEventLoop, servers: tuple[HostPort, ...]) -> None:
        self._loop = loop
        self._servers = servers
        self._dns: dns.asyncresolver.Resolver | None = None

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self._dns is None:
            if self._servers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [server.host for server in self._servers]
                resolver.nameserver_ports = {s.host: s.port for s in self._servers}
                resolver.port = self._servers[0].port
            else:
                resolver = dns.asyncresolver.Resolver()
            resolver.lifetime = 3.0
            self._dns = resolver
        return self._dns

    async def addresses(self, host: str) -> tuple[list[Address], float]:
        if not self._servers:
            infos = await self._loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
            found = list(dict.fromkeys((int(info[0]), str(info[4][0])) for info in infos))
            if not found:
                raise OSError(f"no address for {host}")
            return found, NO_TTL
        resolver = self._resolver()
        addresses: list[Address] = []
        ttl = NO_TTL
        failure: dns.exception.DNSException | None = None
        for kind, family in (("A", socket.AF_INET), ("AAAA", socket.AF_INET6)):
            try:
                answer = await resolver.resolve(host, kind, search=True)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            except dns.exception.DNSException as error:
                # Some servers refuse what they hold no record of (dnsmasq without upstreams
                # refuses AAAA): one family's failure is not the name's.
                failure = error
                continue
            ttl = min(ttl, float(answer.rrset.ttl if answer.rrset is not None else NO_TTL))
            addresses += [(family, record.address) for record in answer]
        if not addresses:
            if failure is not None:
                raise OSError(f"DNS lookup of {host} failed: {failure}") from failure
            raise OSError(f"no address for {host}")
        return addresses, ttl

    async def services(self, name: str) -> tuple[list[tuple[str, int]], float]:
        try:
            answer = await self._resolver().resolve(name, "SRV", search=True)
        except dns.exception.DNSException as error:
            raise OSError(f"DNS SRV lookup of {name} failed: {error}") from error
        records = [(str(record.target).rstrip("."), int(record.port)) for record in answer]
        if not records:
            raise OSError(f"no SRV record for {name}")
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else NO_TTL
        return records, ttl
