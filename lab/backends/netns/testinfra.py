"""A testinfra backend for network namespaces: `ip netns exec NS /bin/sh -c CMD`.

testinfra has no netns backend, but `testinfra.host.Host` accepts any BaseBackend; this is
its chroot backend with `ip netns exec` in place of `chroot`. The filesystem is the host's, so
`ip`, `ss`, `ping` and `sysctl` are the host's tools, seeing the namespace's network.
"""

from __future__ import annotations

import os
from typing import Any

import testinfra.host
from testinfra.backend import base


class NetnsTestinfraBackend(base.BaseBackend):
    """Runs each command inside the named network namespace (needs root)."""

    NAME = "netns"

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.name = name
        super().__init__(name, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        if not os.path.exists(f"/run/netns/{self.name}"):
            raise RuntimeError(
                f"network namespace {self.name!r} does not exist: is the lab up? "
                "(python -m lab status)"
            )
        cmd = self.get_command(command, *args)
        out = self.run_local("ip netns exec %s /bin/sh -c %s", self.name, cmd)
        out.command = self.encode(cmd)
        return out


def get_host(ns: str) -> testinfra.host.Host:
    """A testinfra Host whose commands run in network namespace ns."""
    backend = NetnsTestinfraBackend(ns)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host
