"""A gateway certificate with an IPv6 address (an IP subjectAltName), issued by `vpn pki`, and
the client's server-name check against it in a real TLS 1.3 handshake over IPv6 loopback."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from vpn.cli_pki import add_pki_parser
from vpn.credentials import pki, tls

GATEWAY6 = "fd00:201:1::1"


def vpn_pki(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="vpn")
    add_pki_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["pki", *argv])
    return int(args.func(args))


def ip_sans(path: Path) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.IPAddress))  # type: ignore[arg-type]


def test_vpn_pki_issues_a_server_certificate_with_ipv6_sans(tmp_path: Path) -> None:
    d = str(tmp_path / "pki")
    assert vpn_pki("init", d) == 0
    argv = ["issue", d, "gw", "--server", "--san", GATEWAY6, "--san", "IP:::1"]
    assert vpn_pki(*argv, "--san", "10.9.0.11") == 0
    assert ip_sans(tmp_path / "pki" / "gw.crt") == {
        ipaddress.IPv6Address(GATEWAY6),
        ipaddress.IPv6Address("::1"),
        ipaddress.IPv4Address("10.9.0.11"),
    }
    assert vpn_pki("lab", str(tmp_path / "lab"), "--san", GATEWAY6, "--client", "c1") == 0
    assert ipaddress.IPv6Address(GATEWAY6) in ip_sans(tmp_path / "lab" / "gateway.crt")


def handshake(lab: dict[str, Path], server_name: str) -> str:
    """One TLS handshake over [::1] with the lab contexts; '' or the client's error."""
    server_context = tls.server_context(lab["server"], lab["server.key"], lab["ca"], None)
    client_context = tls.client_context(
        lab["dir"] / "c1.crt", lab["dir"] / "c1.key", lab["ca"], None
    )
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.bind(("::1", 0))
    listener.listen(1)
    listener.settimeout(5)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_context.wrap_socket(conn, server_side=True) as tls_conn:
                tls_conn.recv(1)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname()[:2], timeout=5) as raw:
            try:
                with client_context.wrap_socket(raw, server_hostname=server_name) as conn:
                    conn.sendall(b"x")
            except ssl.SSLCertVerificationError as exc:
                return str(exc)
        return ""
    finally:
        thread.join(10)
        listener.close()


@pytest.fixture(scope="module")
def lab6(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    return pki.lab_pki(tmp_path_factory.mktemp("lab6"), server_sans=(GATEWAY6,), clients=("c1",))


def test_the_server_name_check_takes_an_ipv6_san(lab6: dict[str, Path]) -> None:
    assert handshake(lab6, GATEWAY6) == ""
    refused = handshake(lab6, "fd00:201:1::2")
    assert "IP address mismatch" in refused or "doesn't match" in refused, refused
