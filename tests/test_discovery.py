"""Discovery over mDNS: what a daemon advertises and where, finding it by browsing, the CLI, and withdrawal.

The end-to-end test advertises on loopback only, as a loopback daemon does, so it needs multicast on the
loopback interface; where the sandbox has none the daemon says "discovery is off" and the test is skipped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from bridge import __version__
from bridge.config import Settings
from bridge.server import protocol
from bridge.server.daemon import DaemonThread
from bridge.server.discovery import (
    SERVICE_TYPES,
    Advertiser,
    DaemonInfo,
    advertising_scope,
    browse,
    instance_name,
    txt_record,
)
from tests.test_daemon import cli, no_leaked_threads  # noqa: F401 - the fixture fails a test that leaks threads

LOOPBACK = ["127.0.0.1"]
LOOPBACK_IP = socket.inet_aton("127.0.0.1")


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(out_dir=tmp_path / "renders", state_dir=tmp_path / "state", port=0, token="s3cret")


def test_txt_record_says_what_a_client_needs_and_nothing_else() -> None:
    txt = txt_record("0.1.0", protocol.PROTOCOL_VERSION, token_required=True)
    assert txt == {"txtvers": "1", "app": "stembridge", "version": "0.1.0", "protocol": "1", "token": "1"}
    assert txt_record("0.1.0", 1, token_required=False)["token"] == "0"
    assert not any("/" in v or "\\" in v for v in txt.values())  # never a path


def test_instance_names_fit_dns_sd_and_name_the_port() -> None:
    assert instance_name(9977, "studio-mac.local") == "stembridge on studio-mac (9977)"
    long = instance_name(65535, "a-very-long-host-name-" * 5)
    assert len(long.encode()) <= 63 and long.startswith("stembridge on a-very") and long.endswith("(65535)")


def test_where_a_daemon_is_advertised_follows_where_it_listens() -> None:
    from zeroconf import InterfaceChoice, IPVersion

    loopback = advertising_scope("127.0.0.1")
    assert (loopback.interfaces, loopback.ip_version, loopback.addresses) == (
        LOOPBACK,
        IPVersion.V4Only,
        ["127.0.0.1"],
    )
    assert advertising_scope("::1").interfaces == LOOPBACK  # zeroconf cannot listen on ::1
    assert advertising_scope("::1").addresses == ["::1"]
    one = advertising_scope("192.0.2.7")
    assert (one.interfaces, one.addresses) == (["192.0.2.7"], ["192.0.2.7"])
    everywhere = advertising_scope("0.0.0.0")
    assert everywhere.interfaces is InterfaceChoice.All
    # the machine's own addresses, loopback left out (unless it has no other)
    assert everywhere.addresses == ["127.0.0.1"] or "127.0.0.1" not in everywhere.addresses


def test_an_advertiser_without_multicast_logs_one_line_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> Advertiser:
        ad = Advertiser("203.0.113.7", 9977, version="0.1.0", protocol=1, token_required=False)
        await ad.start()  # no interface has that address: the sockets cannot be set up
        await ad.stop()
        await ad.stop()  # twice is fine
        return ad

    with caplog.at_level(logging.INFO, logger="bridge.server.discovery"):
        ad = asyncio.run(run())
    assert ad.settled.is_set() and not ad.registered.is_set() and ad.error
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.server.discovery"]
    assert len(lines) == 1 and lines[0].startswith("discovery is off: cannot advertise over mDNS (")
    assert "port file or --host/--port" in lines[0]


def loopback_multicast_works() -> bool:
    """Whether a multicast datagram sent on the loopback interface comes back there (it does on Linux and macOS;
    some sandboxes block it)."""
    group = "239.255.77.77"  # administratively scoped: nothing else listens there
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("", 0))
        rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + LOOPBACK_IP)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, LOOPBACK_IP)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        tx.sendto(b"probe", (group, rx.getsockname()[1]))
        rx.settimeout(1.0)
        return rx.recv(64) == b"probe"
    except OSError:
        return False
    finally:
        rx.close()
        tx.close()


def mine(port: int) -> list[DaemonInfo]:
    return [d for d in browse(3.0, until=lambda found: any(x.port == port for x in found)) if d.port == port]


def register_foreign_service() -> tuple[Any, concurrent.futures.Future[Any]]:
    """Start advertising another application's ``_osc._udp`` service on loopback (TouchOSC, say)."""
    from zeroconf import ServiceInfo, Zeroconf

    zc = Zeroconf(interfaces=LOOPBACK)
    info = ServiceInfo(
        SERVICE_TYPES["udp"],
        f"TouchOSC Bridge 4242.{SERVICE_TYPES['udp']}",
        port=4242,
        properties={"version": "1"},
        server="touchosc-4242.local.",
        parsed_addresses=["127.0.0.1"],
    )
    assert zc.loop is not None  # the sync Zeroconf runs its own loop on a thread
    return zc, asyncio.run_coroutine_threadsafe(zc.async_register_service(info), zc.loop)


def test_a_loopback_daemon_is_found_listed_and_withdrawn(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not loopback_multicast_works():
        pytest.skip("multicast on the loopback interface is blocked in this sandbox")
    foreign, registering = register_foreign_service()  # probes while the daemon starts
    d = DaemonThread(settings, discovery=True).start()
    try:
        advertiser = d.daemon.advertiser
        assert advertiser is not None
        if not d.wait_discoverable(10) and advertiser.error:
            pytest.skip(f"no multicast on loopback in this sandbox: {advertiser.error}")
        port = d.port
        found = mine(port)  # the library call
        assert len(found) == 1
        daemon = found[0]
        assert daemon.host == "127.0.0.1" and daemon.addresses == ("127.0.0.1",)
        assert (daemon.version, daemon.protocol, daemon.token_required) == (__version__, "1", True)
        assert daemon.name.startswith("stembridge on ") and daemon.name.endswith(f"({port})")

        registering.result(10)
        args, handler = cli("discover", "--timeout", "1", "--json")  # the command
        assert handler(args) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [x for x in listed if x["port"] == port] == [
            {**daemon.to_dict(), "transports": ["tcp", "udp"]}
        ]
        assert not [x for x in listed if x["port"] == 4242]  # another application's OSC service
        assert str(tmp_path) not in json.dumps(listed)  # never a path

        # `request --discover` finds it when there is no port file and no --host/--port
        flags = ["--discover", "--state-dir", str(tmp_path / "elsewhere"), "--token", "s3cret", "--json"]
        args, handler = cli("request", "ping", *flags)
        assert handler(args) == 0
        assert json.loads(capsys.readouterr().out)["daemon"] == f"127.0.0.1:{port}"
    finally:
        d.stop()
        foreign.close()
    assert not [x for x in browse(1.0) if x.port == port]  # the goodbye packets removed it
