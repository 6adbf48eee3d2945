"""lab's shape: a pure model, one registry of backend names, one pcap reader (no root)."""

from __future__ import annotations

import ast
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lab.backends.base import Backend, ExecTimeout
from lab.backends.registry import BACKENDS, ENTRIES, default_backend_name
from lab.model import LabError
from lab.pcap import count_packets, link_type

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = {"subprocess", "docker", "pyroute2", "testinfra", "lab.backends"}


def test_the_model_imports_no_runtime() -> None:
    for path in sorted((ROOT / "lab" / "model").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = {name.split(".")[0], ".".join(name.split(".")[:2])}
                assert not top & RUNTIME, f"{path.relative_to(ROOT)} imports {name}"


def test_every_registered_backend_is_a_backend() -> None:
    assert list(BACKENDS) == list(ENTRIES)
    for name in BACKENDS:
        assert issubclass(BACKENDS[name], Backend)
        assert BACKENDS[name].name == name


def test_the_netns_backend_loads_without_the_docker_sdk() -> None:
    code = (
        "import sys; sys.modules['docker'] = None\n"
        "from lab.backends.registry import BACKENDS\n"
        "assert BACKENDS['netns'].name == 'netns'\n"
        "assert not any(m.startswith('lab.backends.docker.') and m != 'lab.backends.docker.ping'"
        " for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_an_unknown_backend_in_the_environment_is_explained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VPNLAB_BACKEND", "nosuch")
    with pytest.raises(LabError, match="not a backend; choose one of docker, netns"):
        default_backend_name()


def test_exec_timeout_is_both_a_lab_error_and_a_timeout() -> None:
    error = ExecTimeout("client", ["sleep", "9"], 0.5)
    assert isinstance(error, LabError) and isinstance(error, subprocess.TimeoutExpired)
    assert str(error).startswith("client: `sleep 9` did not finish within 0.5 s")


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_records_are_counted_in_either_byte_order(tmp_path: Path, order: str) -> None:
    header = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    frames = [b"\x00" * 60, b"\x01" * 42]
    body = b"".join(struct.pack(order + "IIII", 0, 0, len(f), len(f)) + f for f in frames)
    path = tmp_path / "two.pcap"
    path.write_bytes(header + body)
    assert (count_packets(path), link_type(path)) == (2, 1)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    assert (count_packets(empty), link_type(empty)) == (0, None)
