"""Discovery over mDNS / DNS-SD: the daemon advertises ``_osc._udp`` and ``_osc._tcp``; clients browse for it.

The TXT record says what a client needs before its first request and nothing more: ``app=stembridge``,
``version``, ``protocol`` (the version of the OSC contract) and ``token`` (``1`` when requests need one). Never
paths, never the token itself.

Where the daemon is advertised follows where it listens:

- on loopback (the default): on the loopback interface only. Its address is useless to other machines, so a
  LAN announcement would only mislead them; clients on the same machine still find it, because browsing covers
  every interface, loopback included.
- on one address: on that interface, with that address.
- on ``0.0.0.0`` or ``::``: on every interface, with the machine's addresses (loopback left out).

Registration probes the network for name clashes (about 1.5 s), so it runs in the background: the daemon
answers requests at once and shows up in browsers a moment later. Without multicast the daemon logs one line
and serves on; clients then find it through its port file or ``--host``/``--port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.errors import DaemonUnreachable

log = logging.getLogger(__name__)

SERVICE_TYPES = {"udp": "_osc._udp.local.", "tcp": "_osc._tcp.local."}
APP = "stembridge"
STOP_TIMEOUT_S = 1.0  # the most shutdown waits for the goodbye packets
DEFAULT_BROWSE_S = 2.0


def txt_record(version: str, protocol: int, token_required: bool) -> dict[str, str]:
    """The TXT properties a daemon advertises."""
    return {
        "txtvers": "1",
        "app": APP,
        "version": version,
        "protocol": str(protocol),
        "token": "1" if token_required else "0",
    }


def instance_name(port: int, hostname: str | None = None) -> str:
    """``stembridge on <host> (<port>)``: unique per daemon on a host, at most 63 bytes as DNS-SD wants."""
    host = (hostname or socket.gethostname()).split(".")[0] or "localhost"
    name = f"{APP} on {host} ({port})"
    while len(name.encode()) > 63:
        host = host[:-1]
        name = f"{APP} on {host} ({port})"
    return name


def _server_name(port: int) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")[:40]
    return f"{APP}-{port}-{label or 'host'}.local."


@dataclass(frozen=True)
class Scope:
    """Where to advertise: the interfaces to send on, the IP version, and the addresses to announce."""

    interfaces: Any  # a list of addresses, or zeroconf.InterfaceChoice.All
    ip_version: Any  # zeroconf.IPVersion
    addresses: list[str]


def _machine_addresses(version: int) -> list[str]:
    """The machine's addresses of that IP version, loopback and IPv6 link-local left out."""
    import ifaddr  # zeroconf's own dependency

    found = []
    for adapter in ifaddr.get_adapters():
        for item in adapter.ips:
            raw = item.ip if isinstance(item.ip, str) else item.ip[0]
            ip = ipaddress.ip_address(raw)
            if ip.version == version and not ip.is_loopback and not ip.is_link_local:
                found.append(str(ip))
    return sorted(set(found))


def advertising_scope(bound_host: str) -> Scope:
    """Where a daemon listening on ``bound_host`` (an IP address) is advertised; see the module docstring."""
    from zeroconf import InterfaceChoice, IPVersion

    ip = ipaddress.ip_address(bound_host.strip("[]"))
    if ip.is_loopback:  # python-zeroconf cannot listen on ::1; the v4 loopback carries its AAAA record
        return Scope(["127.0.0.1"], IPVersion.V4Only, [str(ip)])
    if ip.is_unspecified:
        addresses = _machine_addresses(4)
        if ip.version == 6:
            addresses += _machine_addresses(6)
            return Scope(InterfaceChoice.All, IPVersion.All, addresses or ["::1"])
        return Scope(InterfaceChoice.All, IPVersion.V4Only, addresses or ["127.0.0.1"])
    version = IPVersion.V4Only if ip.version == 4 else IPVersion.V6Only
    return Scope([str(ip)], version, [str(ip)])


class Advertiser:
    """Advertises one daemon while it runs. ``start`` and ``stop`` run on the daemon's event loop.

    Args:
        bound_host: the IP address the daemon's sockets are bound to.
        port: its UDP and TCP port.
        version: the stembridge version.
        protocol: the OSC contract's version.
        token_required: whether requests need a token.
    """

    def __init__(
        self, bound_host: str, port: int, *, version: str, protocol: int, token_required: bool
    ) -> None:
        self.bound_host = bound_host
        self.port = port
        self.name = instance_name(port)
        self.properties = txt_record(version, protocol, token_required)
        self.registered = threading.Event()  # set once both services are announced; wait on any thread
        self.settled = threading.Event()  # set once registration succeeded or failed
        self.error: str | None = None  # why discovery is off, when it is
        self._zc: Any = None
        self._task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Open the mDNS sockets and register in the background. Never raises: a failure is one log line."""
        try:
            from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

            scope = advertising_scope(self.bound_host)
            self._zc = AsyncZeroconf(interfaces=scope.interfaces, ip_version=scope.ip_version)
            infos = [
                AsyncServiceInfo(
                    service_type,
                    f"{self.name}.{service_type}",
                    port=self.port,
                    properties=self.properties,
                    server=_server_name(self.port),
                    parsed_addresses=scope.addresses,
                )
                for service_type in SERVICE_TYPES.values()
            ]
        except Exception as exc:  # no multicast, no usable interface, a sandbox without sockets...
            self._off(exc)
            await self._close()
            return
        self._task = asyncio.ensure_future(self._register(infos, scope))

    async def _register(self, infos: Sequence[Any], scope: Scope) -> None:
        try:
            announcing = await asyncio.gather(
                *(self._zc.async_register_service(info, allow_name_change=True) for info in infos)
            )
            await asyncio.gather(*announcing)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._off(exc)
            return
        self.name = infos[0].name[: -len(SERVICE_TYPES["udp"]) - 1]  # renamed if the name was taken
        self.registered.set()
        self.settled.set()
        where = "loopback only" if scope.interfaces == ["127.0.0.1"] else ", ".join(scope.addresses)
        log.info("discoverable over mDNS as %r (_osc._udp, _osc._tcp) on %s", self.name, where)

    def _off(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        log.warning(
            "discovery is off: cannot advertise over mDNS (%s); clients can still find the daemon through "
            "its port file or --host/--port",
            self.error,
        )
        self.settled.set()

    async def stop(self) -> None:
        """Withdraw the services (goodbye packets, at most ``STOP_TIMEOUT_S``) and close. Never raises."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close()

    async def _close(self) -> None:
        zc, self._zc = self._zc, None
        if zc is None:
            return
        try:  # goodbye packets for what is registered, then the sockets close
            await asyncio.wait_for(zc.async_close(), STOP_TIMEOUT_S)
        except Exception as exc:
            log.warning(
                "could not withdraw the mDNS advertisement cleanly (%s); its records expire by themselves",
                exc or type(exc).__name__,
            )
            zc.zeroconf.close()
        else:
            if self.registered.is_set():
                log.info("withdrew the mDNS advertisement %r", self.name)


# --- browsing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DaemonInfo:
    """A daemon found on the network.

    Attributes:
        name: its instance name, e.g. ``stembridge on studio-mac (9977)``.
        host: the address to send to (IPv4 preferred).
        port: its UDP and TCP port.
        version: its stembridge version.
        protocol: the version of the OSC contract it speaks.
        token_required: whether requests need ``token <secret>``.
        transports: ``udp`` and/or ``tcp``.
        addresses: every address it announced.
    """

    name: str
    host: str
    port: int
    version: str
    protocol: str
    token_required: bool
    transports: tuple[str, ...]
    addresses: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "port": self.port,
            "version": self.version,
            "protocol": self.protocol,
            "token_required": self.token_required,
            "transports": list(self.transports),
            "addresses": list(self.addresses),
        }


def _text(properties: dict[bytes, bytes | None], key: str) -> str:
    value = properties.get(key.encode())
    return value.decode("utf-8", "replace") if value else ""


def _pick_host(addresses: Sequence[str]) -> str:
    ordered = sorted(addresses, key=lambda a: (":" in a, a))  # IPv4 first
    return ordered[0]


def _merge(found: dict[str, dict[str, Any]]) -> list[DaemonInfo]:
    daemons = []
    for name, by_transport in sorted(found.items()):
        first = next(iter(by_transport.values()))
        addresses: list[str] = []
        for info in by_transport.values():
            addresses += [a for a in info.parsed_scoped_addresses() if a not in addresses]
        if not addresses:
            continue
        props = first.properties
        daemons.append(
            DaemonInfo(
                name=name,
                host=_pick_host(addresses),
                port=int(first.port),
                version=_text(props, "version"),
                protocol=_text(props, "protocol"),
                token_required=_text(props, "token") == "1",
                transports=tuple(sorted(by_transport)),
                addresses=tuple(addresses),
            )
        )
    return daemons


def browse(
    timeout: float = DEFAULT_BROWSE_S,
    *,
    interfaces: Any = None,
    until: Callable[[list[DaemonInfo]], bool] | None = None,
) -> list[DaemonInfo]:
    """The stembridge daemons that answer on the network within ``timeout`` seconds (other OSC services are
    left out).

    Args:
        timeout: how long to listen, in seconds.
        interfaces: addresses to browse on (default: every interface, loopback included).
        until: return as soon as this is true of the daemons found so far.

    Raises:
        DaemonUnreachable: mDNS cannot be used on this machine.
    """
    from zeroconf import InterfaceChoice, ServiceBrowser, ServiceStateChange, Zeroconf

    try:
        zc = Zeroconf(interfaces=InterfaceChoice.All if interfaces is None else interfaces)
    except Exception as exc:
        raise DaemonUnreachable(
            f"cannot browse for daemons: mDNS is unavailable here ({exc}); pass --host and --port"
        ) from exc
    changes: queue.Queue[tuple[str, str, Any]] = queue.Queue()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        changes.put((service_type, name, state_change))

    found: dict[str, dict[str, Any]] = {}
    transports = {t: k for k, t in SERVICE_TYPES.items()}
    browser = ServiceBrowser(zc, list(SERVICE_TYPES.values()), handlers=[on_change])
    try:
        deadline = time.monotonic() + max(0.0, timeout)
        while (left := deadline - time.monotonic()) > 0:
            try:
                service_type, name, change = changes.get(timeout=left)
            except queue.Empty:
                break
            instance = name[: -len(service_type) - 1] if name.endswith("." + service_type) else name
            transport = transports.get(service_type, service_type)
            if change is ServiceStateChange.Removed:
                found.get(instance, {}).pop(transport, None)
                continue
            wait_ms = int(max(0.05, deadline - time.monotonic()) * 1000)
            info = zc.get_service_info(service_type, name, timeout=wait_ms)
            if info is None or _text(info.properties, "app") != APP:
                continue
            found.setdefault(instance, {})[transport] = info
            if until is not None and until(_merge(found)):
                break
    finally:
        browser.cancel()
        zc.close()
    return _merge({k: v for k, v in found.items() if v})
