"""Real TLS 1.3 handshakes over loopback TCP: who is let in, who is refused, and why.

Each refusal is checked from both ends, on the reason `explain` gives, because the two
sides see different OpenSSL errors for the same failure.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from vpn.credentials import pki
from vpn.credentials.tls import (
    ALPN,
    TlsError,
    client_context,
    explain,
    peer_identity,
    server_context,
)

TIMEOUT = 1.0  # per socket operation; a handshake here takes a few milliseconds


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pki.lab_pki(tmp_path_factory.mktemp("pki"), server_sans=("127.0.0.1",))


@dataclass
class Side:
    """What one end of a connection saw."""

    exc: BaseException | None = None
    reason: str = ""
    identity: str | None = None
    data: bytes = b""
    alpn: str | None = None


def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_hostname: str = "gateway",
) -> tuple[Side, Side]:
    """Connect a client to a one-shot server over 127.0.0.1; return (server, client) views.

    After the handshake the server greets the client by the name in its certificate and the
    client answers; the client reads first, which is where TLS 1.3 tells it that the server
    refused its certificate.
    """
    server, client = Side(), Side()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            tls: ssl.SSLSocket | None = None
            try:
                conn, _ = listener.accept()
                conn.settimeout(TIMEOUT)
                tls = server_ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
                tls.do_handshake()
                server.identity = peer_identity(tls)
                server.alpn = tls.selected_alpn_protocol()
                tls.sendall(f"welcome {server.identity}".encode())
                server.data = tls.recv(64)
            except Exception as exc:
                server.exc, server.reason = exc, explain(exc, tls)
            finally:
                if tls is not None:
                    tls.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            sock = socket.create_connection(listener.getsockname(), timeout=TIMEOUT)
            tls = client_ctx.wrap_socket(
                sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
            try:
                tls.do_handshake()
                client.identity = peer_identity(tls)
                client.alpn = tls.selected_alpn_protocol()
                client.data = tls.recv(64)
                tls.sendall(b"thanks")
            except Exception as exc:
                client.exc, client.reason = exc, explain(exc, tls)
            finally:
                tls.close()
        finally:
            thread.join(3 * TIMEOUT)
        assert not thread.is_alive(), "server thread did not finish"
    return server, client


def server_ctx(lab: dict[str, Path], cert: str = "server", crl: bool = True) -> ssl.SSLContext:
    return server_context(lab[cert], lab[f"{cert}.key"], lab["ca"], lab["crl"] if crl else None)


def client_ctx(lab: dict[str, Path], cert: str = "client1") -> ssl.SSLContext:
    return client_context(lab[cert], lab[f"{cert}.key"], lab["ca"])


def refused(server: Side, client: Side) -> None:
    assert server.identity is None and client.data == b"", "the connection must not be usable"
    assert server.exc is not None and client.exc is not None


# -- success -----------------------------------------------------------------------------------


def test_mutual_handshake_succeeds_and_names_both_ends(lab: dict[str, Path]) -> None:
    server, client = handshake(server_ctx(lab), client_ctx(lab))
    assert server.exc is None and client.exc is None, (server.reason, client.reason)
    assert server.identity == "client1"
    assert client.identity == "gateway"
    assert client.data == b"welcome client1" and server.data == b"thanks"
    assert server.alpn == client.alpn == ALPN


def test_server_address_in_san_is_accepted(lab: dict[str, Path]) -> None:
    _, client = handshake(server_ctx(lab), client_ctx(lab), server_hostname="127.0.0.1")
    assert client.exc is None, client.reason
    assert client.identity == "gateway"


def test_contexts_are_tls13_only(lab: dict[str, Path]) -> None:
    for ctx in (server_ctx(lab), client_ctx(lab)):
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert client_ctx(lab).check_hostname
    assert server_ctx(lab).verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    assert not server_ctx(lab, crl=False).verify_flags & ssl.VERIFY_CRL_CHECK_LEAF


# -- refusals, each seen from both ends ----------------------------------------------------------


def test_tls12_only_client_is_refused(lab: dict[str, Path]) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.load_cert_chain(lab["client1"], lab["client1.key"])
    old.load_verify_locations(lab["ca"])
    server, client = handshake(server_ctx(lab), old)
    refused(server, client)
    assert "protocol version not supported: peer offered TLS below 1.3" in server.reason
    assert "protocol version not supported: peer refused our TLS version" in client.reason


def test_client_without_certificate_is_refused(lab: dict[str, Path]) -> None:
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.minimum_version = ssl.TLSVersion.TLSv1_3
    anonymous.load_verify_locations(lab["ca"])
    server, client = handshake(server_ctx(lab), anonymous)
    refused(server, client)
    assert "peer did not send a certificate" in server.reason
    assert "peer requires a certificate and we sent none" in client.reason


def test_client_from_rogue_ca_is_refused(lab: dict[str, Path]) -> None:
    rogue = client_context(lab["rogue-client"], lab["rogue-client.key"], lab["ca"])
    server, client = handshake(server_ctx(lab), rogue)
    refused(server, client)
    assert "certificate signed by an unknown CA" in server.reason
    assert "peer rejected our certificate: it was signed by an unknown CA" in client.reason


def test_expired_client_is_refused(lab: dict[str, Path]) -> None:
    server, client = handshake(server_ctx(lab), client_ctx(lab, "expired"))
    refused(server, client)
    assert "certificate has expired" in server.reason
    assert "peer rejected our certificate: certificate has expired" in client.reason


def test_revoked_client_is_refused_by_a_server_with_crl(lab: dict[str, Path]) -> None:
    server, client = handshake(server_ctx(lab), client_ctx(lab, "revoked"))
    refused(server, client)
    assert "certificate revoked: it is listed in the CRL" in server.reason
    assert "peer rejected our certificate: certificate revoked" in client.reason


def test_revoked_client_passes_without_crl(lab: dict[str, Path]) -> None:
    """The CRL is what stops it: without one the same certificate is accepted."""
    server, client = handshake(server_ctx(lab, crl=False), client_ctx(lab, "revoked"))
    assert server.exc is None and client.exc is None, (server.reason, client.reason)
    assert server.identity == "revoked"


def test_impostor_server_name_is_refused(lab: dict[str, Path]) -> None:
    server, client = handshake(server_ctx(lab, "impostor"), client_ctx(lab))
    refused(server, client)
    assert "server name mismatch: certificate is for 'impostor', expected 'gateway'" in (
        client.reason
    )
    assert "peer rejected our certificate (bad certificate)" in server.reason


def test_client_expecting_another_name_refuses_gateway(lab: dict[str, Path]) -> None:
    server, client = handshake(server_ctx(lab), client_ctx(lab), server_hostname="vpn.example")
    refused(server, client)
    assert "server name mismatch: certificate is for 'gateway', '127.0.0.1', expected" in (
        client.reason
    )
    assert "'vpn.example'" in client.reason
    assert "peer rejected our certificate" in server.reason


def test_rogue_gateway_is_refused_by_client(lab: dict[str, Path]) -> None:
    """A man in the middle with a certificate for the gateway's name from another CA."""
    server, client = handshake(server_ctx(lab, "rogue-gateway"), client_ctx(lab))
    refused(server, client)
    assert "certificate signed by an unknown CA" in client.reason
    assert "'gateway', issued by 'rogue CA'" in client.reason
    assert "peer rejected our certificate: it was signed by an unknown CA" in server.reason


def test_server_certificate_used_as_client_is_refused(lab: dict[str, Path]) -> None:
    server, client = handshake(server_ctx(lab), client_ctx(lab, "impostor"))
    refused(server, client)
    assert "certificate not allowed for this use" in server.reason
    assert "peer rejected our certificate: not allowed for this use" in client.reason


def test_explain_without_socket_still_names_the_failure(lab: dict[str, Path]) -> None:
    ctx = client_ctx(lab)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        srv = server_ctx(lab, "impostor")

        def serve() -> None:
            conn, _ = listener.accept()
            conn.settimeout(TIMEOUT)
            try:
                with srv.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with (
            socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as sock,
            pytest.raises(ssl.SSLCertVerificationError) as info,
        ):
            ctx.wrap_socket(sock, server_hostname="gateway")
        thread.join(3 * TIMEOUT)
    assert explain(info.value) == "server name mismatch: certificate is not valid for 'gateway'"


# -- peers that do not speak our TLS -------------------------------------------------------------


def raw_peer(behaviour: str) -> tuple[socket.socket, threading.Thread]:
    """A TCP listener that, per connection, closes at once / answers in plain text / stays mute."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            if behaviour == "text":
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                time.sleep(0.1)
            elif behaviour == "mute":
                try:
                    conn.recv(4096)
                    conn.recv(4096)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.parametrize(
    ("behaviour", "timeout", "expected"),
    [
        ("close", TIMEOUT, "peer closed the connection during the handshake"),
        ("text", TIMEOUT, "peer does not speak TLS"),
        ("mute", 0.3, "no answer from the peer in time"),
    ],
)
def test_client_explains_peers_that_are_not_gateways(
    lab: dict[str, Path], behaviour: str, timeout: float, expected: str
) -> None:
    listener, thread = raw_peer(behaviour)
    with listener:
        sock = socket.create_connection(listener.getsockname(), timeout=timeout)
        with pytest.raises(OSError) as info:
            client_ctx(lab).wrap_socket(sock, server_hostname="gateway")
        sock.close()
        thread.join(3 * TIMEOUT)
    assert expected in explain(info.value)


# -- files -------------------------------------------------------------------------------------


def test_missing_key_names_file_and_tool(lab: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.key"
    with pytest.raises(TlsError) as info:
        server_context(lab["server"], missing, lab["ca"])
    assert str(missing) in str(info.value) and "vpn pki" in str(info.value)
    assert "no such file" in explain(info.value)
    with pytest.raises(TlsError, match=r"CA certificate .*no such file.*vpn pki"):
        client_context(lab["client1"], lab["client1.key"], tmp_path / "ca.crt")
    with pytest.raises(TlsError, match=r"CRL .*no such file"):
        server_context(lab["server"], lab["server.key"], lab["ca"], tmp_path / "crl.pem")


def test_key_of_another_certificate_is_named(lab: dict[str, Path]) -> None:
    with pytest.raises(TlsError, match="does not belong to certificate"):
        client_context(lab["client1"], lab["client2.key"], lab["ca"])


def test_files_of_the_wrong_kind_are_named(lab: dict[str, Path]) -> None:
    with pytest.raises(TlsError, match="no '-----BEGIN X509 CRL-----' block"):
        server_context(lab["server"], lab["server.key"], lab["ca"], lab["ca"])
    with pytest.raises(TlsError, match="not a PEM certificate"):
        server_context(lab["server.key"], lab["server.key"], lab["ca"])


# -- cost --------------------------------------------------------------------------------------


def test_gateway_handshake_cost_allows_200_per_second(lab: dict[str, Path]) -> None:
    """CPU time the server thread spends per accepted, fully verified client (CRL on)."""
    count = 40
    srv, cli = server_ctx(lab), client_ctx(lab)
    cpu: list[float] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            start = time.thread_time()
            for _ in range(count):
                conn, _ = listener.accept()
                conn.settimeout(TIMEOUT)
                with srv.wrap_socket(conn, server_side=True) as tls:
                    peer_identity(tls)
                    tls.sendall(b"ok")
            cpu.append(time.thread_time() - start)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        for _ in range(count):
            with (
                socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as sock,
                cli.wrap_socket(sock, server_hostname="gateway") as tls,
            ):
                assert tls.recv(2) == b"ok"
        thread.join(5 * TIMEOUT)
    assert cpu, "server thread failed"
    rate = count / cpu[0]
    assert rate >= 200, f"gateway manages only {rate:.0f} handshakes per CPU second"
