"""The gateway's limits and deadlines on the real server, each tried at its edge: --max-clients
admits exactly that many, a connection that never sends HELLO and one that never finishes its
TLS handshake are both closed at the deadline, with the reason that names it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.netns.harness import HOST, Testbed, connected, wait_for
from tests.netns.test_security_admission import closed_by_server, open_idle
from tests.netns.test_vpn import (  # the fixtures and helpers of the end-to-end tests
    _client_context,
    _read_error,
    _tls_to_gateway,
    pki,
    start_client,
    start_server,
)
from vpn import protocol

__all__ = ["pki"]  # fixtures, used by name

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="needs root for network namespaces and TUN devices (run as root: sudo make test)",
)

HANDSHAKE_TIMEOUT = 3  # tests/netns/harness.server_args


def test_max_clients_admits_exactly_that_many(bed: Testbed, pki: dict[str, Path]) -> None:
    """--max-clients 1: the first client gets its tunnel, the second is told the server is full
    before it can log in — and the first keeps working."""
    server = start_server(bed, pki, "--max-clients", "1")
    start_client(bed, pki, "client1")
    good = bed.clients["client1"]
    wait_for("client1", lambda: connected(bed, good))
    gateway = bed.add_client("raw")
    sock = _tls_to_gateway(bed, bed.clients["raw"], gateway, _client_context(pki, "client2"))
    try:
        hello = b'{"version":1,"name":"client2","features":[]}'
        sock.sendall(protocol.encode(protocol.MsgType.HELLO, hello))
        assert "server full: 1 clients connected" in _read_error(sock)
    finally:
        sock.close()
    wait_for("the refusal in the log", lambda: 'reason="server full"' in server.output())
    assert [c["identity"] for c in bed.status(bed.gateway)["clients"]] == ["client1"]
    assert bed.ping(good, HOST, count=2)


def test_a_session_without_hello_is_closed_at_the_deadline(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    """TLS done, then silence: the session ends with "no HELLO within 3 s", not later."""
    start_server(bed, pki)
    gateway = bed.add_client("raw")
    sock = _tls_to_gateway(bed, bed.clients["raw"], gateway, _client_context(pki, "client1"))
    try:
        assert f"no HELLO within {HANDSHAKE_TIMEOUT} s" in _read_error(sock)
    finally:
        sock.close()


def test_a_stalled_tls_handshake_is_closed_at_the_deadline(
    bed: Testbed, pki: dict[str, Path]
) -> None:
    """A TCP connection that never sends a ClientHello is closed after --handshake-timeout."""
    server = start_server(bed, pki)
    gateway = bed.add_client("raw")
    socks = open_idle(bed.clients["raw"], gateway, 1)
    try:
        assert closed_by_server(socks, HANDSHAKE_TIMEOUT + 3) == set(socks)
    finally:
        for s in socks:
            s.close()
    reason = f"TLS handshake not finished within {HANDSHAKE_TIMEOUT} s"
    wait_for("the log line", lambda: reason in server.output())
