"""OpenVPN 2.6 as the reference: configured as close to this VPN as it goes.

TLS 1.3 only, AES-256-GCM for data, certificates from the same lab CA (EC keys, so `dh none`),
a routed `dev tun` with `topology subnet`, the LAN pushed as a route. No data-channel offload
(DCO): like this VPN, it moves packets in user space.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.measure import BenchError

POOL = "192.168.54.0/24"  # apart from the lab VPN's 192.168.53.0/24
PORT = 1194
READY = "Initialization Sequence Completed"


def version() -> str:
    binary = shutil.which("openvpn")
    if binary is None:
        return ""
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = (result.stdout or "").splitlines()
    return first[0].split(" [", 1)[0] if first else ""


def ensure_installed(progress: object = print) -> None:
    """Install Debian's openvpn package when the command is missing (root, apt)."""
    if shutil.which("openvpn"):
        return
    if shutil.which("apt-get") is None:
        raise BenchError(
            "openvpn is not installed and apt-get is missing: install OpenVPN 2.6 by hand, "
            "or leave the openvpn paths out (--paths plain,vpn)"
        )
    if callable(progress):
        progress("openvpn missing: apt-get install openvpn")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openvpn"],
    ):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise BenchError(
                f"`{' '.join(argv)}` failed (status {result.returncode}): "
                f"{result.stderr.strip()[-500:]} — install openvpn by hand or leave the "
                "openvpn paths out (--paths plain,vpn)"
            )
    if not shutil.which("openvpn"):
        raise BenchError("apt-get installed openvpn but the command is still not on PATH")


def _netmask(cidr: str) -> tuple[str, str]:
    import ipaddress

    network = ipaddress.IPv4Network(cidr)
    return str(network.network_address), str(network.netmask)


def server_config(
    *, proto: str, ca: Path, cert: Path, key: Path, push: list[str], tun: str = "ovpn0"
) -> str:
    network, mask = _netmask(POOL)
    pushes = "".join(f'push "route {" ".join(_netmask(n))}"\n' for n in push)
    return (
        f"port {PORT}\n"
        f"proto {'tcp-server' if proto == 'tcp' else 'udp'}\n"
        f"dev {tun}\ndev-type tun\n"
        "topology subnet\n"
        f"server {network} {mask}\n"
        f"{pushes}"
        f"ca {ca}\ncert {cert}\nkey {key}\n"
        "dh none\n"
        "tls-version-min 1.3\n"
        "data-ciphers AES-256-GCM\n"
        "disable-dco\n"
        "keepalive 10 60\n"
        "verb 3\n"
    )


def client_config(
    *,
    proto: str,
    server: str,
    server_name: str,
    ca: Path,
    cert: Path,
    key: Path,
    tun: str = "ovpn0",
) -> str:
    return (
        "client\n"
        f"proto {'tcp-client' if proto == 'tcp' else 'udp'}\n"
        f"remote {server} {PORT}\n"
        "nobind\n"
        f"dev {tun}\ndev-type tun\n"
        f"ca {ca}\ncert {cert}\nkey {key}\n"
        "remote-cert-tls server\n"
        f"verify-x509-name {server_name} name\n"
        "tls-version-min 1.3\n"
        "data-ciphers AES-256-GCM\n"
        "disable-dco\n"
        "verb 3\n"
    )
