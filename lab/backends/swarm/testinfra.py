"""A testinfra backend for a container on any engine: testinfra's docker backend, with
`docker -H URL exec` so a node on a swarm worker is reached through that worker's engine."""

from __future__ import annotations

from typing import Any

import testinfra.host
from testinfra.backend import base


class EngineDockerBackend(base.BaseBackend):
    """Runs each command in container `name` of the engine at `url`."""

    NAME = "docker-engine"

    def __init__(self, name: str, url: str, *args: Any, **kwargs: Any) -> None:
        self.name, self.url = name, url
        super().__init__(name, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        cmd = self.get_command(command, *args)
        out = self.run_local("docker -H %s exec %s /bin/sh -c %s", self.url, self.name, cmd)
        out.command = self.encode(cmd)
        return out


def get_host(container: str, url: str) -> testinfra.host.Host:
    backend = EngineDockerBackend(container, url)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host
