"""Docker backend: the lab as compose services, one container per node.

Compose creates and removes the lab from the same files the namespace backend reads (so the
topology has one source), through its command line: `docker compose` (v2) where it exists,
`docker-compose` (1.29) otherwise. Everything else goes through the Docker SDK, plus `ip`,
`iptables` and `tcpdump` on the host for what only the host can do: pull a node's cable, let
routed traffic cross a lab network, watch a bridge. Each responsibility is a module of this
package; this one puts them together.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from lab.backends.base import require_root, require_tun
from lab.backends.docker.engine import engine_problem
from lab.backends.docker.exec import DockerExec
from lab.backends.docker.lifecycle import DockerLifecycle
from lab.backends.docker.network import DockerNetworking
from lab.model import LabError

if TYPE_CHECKING:
    import testinfra.host

LAB_DIR = PurePosixPath("/lab")  # where every node sees the run's work directory


class DockerBackend(DockerLifecycle, DockerExec, DockerNetworking):
    """Nodes are containers of the compose project `vpnlab-<run_id>`; workdir is /lab in each."""

    def preflight(self) -> None:
        # Root first: without it the engine's socket does not answer, whether it runs or not.
        require_root("the Docker lab's iptables rules, cable cuts and captures")
        problem = engine_problem()
        if problem is not None:
            raise LabError(problem)
        require_tun()

    def node_path(self, host_path: Path) -> str:
        path = Path(host_path)
        if not path.is_absolute():
            path = self.workdir / path
        try:
            relative = path.resolve().relative_to(self.workdir.resolve())
        except ValueError:
            raise LabError(
                f"{host_path} is outside the run's work directory {self.workdir}: nodes see only "
                f"that directory (at {LAB_DIR}); put the file there"
            ) from None
        return str(LAB_DIR / relative)

    def vpn_argv(self) -> list[str]:
        return ["vpn"]

    def host(self, node: str) -> testinfra.host.Host:
        import testinfra

        return testinfra.get_host(f"docker://{self.container(node).name}")
