"""The client's resolver: the gateway's name servers in resolv.conf while the tunnel is up, and
exactly the previous file back afterwards — on exit, on SIGTERM, and after a crash.

Why so careful: `ip netns exec NS` shows a process /etc/netns/NS/resolv.conf in place of
/etc/resolv.conf only when that file exists; otherwise the process sees the host's. A client
in a namespace must never rewrite the host's resolver. The rule, in this order:

- in a named namespace (ours is the one bound at /run/netns/NAME), the file must be
  /etc/netns/NAME/resolv.conf itself (same device and inode); anything else is refused;
- otherwise the file is refused if it is the very file PID 1 sees (through /proc/1/root) while
  this process runs in another network namespace than PID 1's — and refused too when /proc/1
  cannot be read (fail safe). In a container, or on a real client machine, the client and PID 1
  share the network namespace and the file is ours to change.

The file is rewritten in place (a bind-mounted file cannot be replaced by a rename), after a
copy of the original and of what we write is saved in the state directory, named by the file's
device and inode. The next start finds that copy and restores the original, but only if the
file still holds what we wrote: a file someone changed since is theirs, and is left alone.
systemd-resolved (resolv.conf a link into /run/systemd/resolve) is asked through resolvectl
instead, per interface; it forgets the settings by itself when the TUN goes away.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from vpn import log
from vpn.errors import ResolverError

MARK = "# vpn client: name servers pushed by the gateway; the previous file comes back on exit\n"
Servers = Sequence[ipaddress.IPv4Address]


class Resolver(Protocol):
    def apply(self, servers: Servers, search: Sequence[str]) -> None: ...
    def restore(self) -> None: ...


def render(original: str, servers: Servers, search: Sequence[str]) -> str:
    """Our resolv.conf: the pushed servers and domains, and the original's `options` lines."""
    lines = [MARK, *(f"nameserver {s}\n" for s in servers)]
    if search:
        lines.append("search " + " ".join(search) + "\n")
    lines += [ln + "\n" for ln in original.splitlines() if ln.split()[:1] == ["options"]]
    return "".join(lines)


def _write_in_place(path: Path, text: str) -> None:
    with open(path, "r+", encoding="utf-8") as fh:
        fh.seek(0)
        fh.write(text)
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())


class ResolvConf:
    """resolv.conf of this namespace or container, changed and given back."""

    def __init__(
        self,
        path: Path,
        state_dir: Path,
        *,
        proc: Path = Path("/proc"),
        netns_dir: Path = Path("/run/netns"),
        etc_netns: Path = Path("/etc/netns"),
    ) -> None:
        self.path = path
        self.state_dir = state_dir
        self.proc = proc
        self.netns_dir = netns_dir
        self.etc_netns = etc_netns
        self.saved: Path | None = None  # our state file while our text is in place
        self.original = ""
        self.written = ""

    def refusal(self) -> str | None:
        """Why this file must not be changed (it is the host's), or None when it may be."""
        try:
            mine = os.stat(self.path)
        except OSError as exc:
            return f"{self.path}: {exc.strerror}"
        name = self.netns_name()
        if name is not None:  # `ip netns exec NAME`: only /etc/netns/NAME/resolv.conf is ours
            own = self.etc_netns / name / "resolv.conf"
            try:
                theirs = os.stat(own)
            except OSError:
                return self._host_refusal(f"{own} does not exist")
            if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
                return self._host_refusal(f"{self.path} is not {own}")
            return None
        try:
            init = os.stat(self.proc / "1" / "root" / str(self.path.absolute()).lstrip("/"))
            same_net = os.readlink(self.proc / "1/ns/net") == os.readlink(self.proc / "self/ns/net")
        except FileNotFoundError:
            return None  # PID 1 has no such file: it lives only in our mount namespace
        except OSError as exc:
            return f"cannot tell whose {self.path} this is ({exc.strerror} in {self.proc}/1)"
        if (mine.st_dev, mine.st_ino) == (init.st_dev, init.st_ino) and not same_net:
            return self._host_refusal("PID 1 sees the same file from another network namespace")
        return None

    def netns_name(self) -> str | None:
        """The name of our network namespace if it is one of `ip netns` (/run/netns/NAME)."""
        try:
            here = os.stat(self.proc / "self/ns/net")
            names = sorted(os.listdir(self.netns_dir))
        except OSError:
            return None
        for name in names:
            try:
                st = os.stat(self.netns_dir / name)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino):
                return name
        return None

    def _host_refusal(self, why: str) -> str:
        return (
            f"{self.path} would be the host's resolver ({why}); create "
            "/etc/netns/NS/resolv.conf before `ip netns exec NS`, or run the client with --no-dns"
        )

    def state_file(self) -> Path:
        st = os.stat(self.path)
        return self.state_dir / f"resolv.conf.{st.st_dev}.{st.st_ino}.json"

    def recover(self) -> None:
        """After a crash: put back the file a previous run saved, if ours is still in it."""
        try:
            state = self.state_file()
            saved = json.loads(state.read_text())
            original, written = str(saved["original"]), str(saved["written"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warn("dns_recover_failed", file=str(self.path), reason=str(exc))
            return
        if (refusal := self.refusal()) is not None:
            log.warn("dns_recover_failed", file=str(self.path), reason=refusal)
            return
        try:
            if self.path.read_text() == written:
                _write_in_place(self.path, original)
                log.event("dns_recovered", file=str(self.path), saved=str(state))
            else:
                log.warn("dns_recover_skipped", file=str(self.path), reason="changed since; left")
            state.unlink(missing_ok=True)
        except OSError as exc:
            log.warn("dns_recover_failed", file=str(self.path), reason=exc.strerror or str(exc))

    def apply(self, servers: Servers, search: Sequence[str]) -> None:
        refusal = self.refusal()
        if refusal is not None:
            raise ResolverError(f"name servers not applied: {refusal}")
        try:
            if self.saved is None:
                self.original = self.path.read_text()
            text = render(self.original, servers, search)
            state = self.state_file()
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = state.with_suffix(".tmp")
            tmp.write_text(json.dumps({"original": self.original, "written": text}))
            os.replace(tmp, state)  # saved before the file changes: a crash now is recoverable
            self.saved = state
            _write_in_place(self.path, text)
            self.written = text
        except OSError as exc:
            raise ResolverError(
                f"cannot write {self.path}: {exc.strerror or exc}",
                exc.errno,
                advice="run the client as root, or with --no-dns",
            ) from None
        log.event("dns_applied", file=str(self.path), servers=",".join(map(str, servers)),
                  search=",".join(search) or "-")  # fmt: skip

    def restore(self) -> None:
        if self.saved is None:
            return
        try:
            if self.path.read_text() == self.written:
                _write_in_place(self.path, self.original)
                log.event("dns_restored", file=str(self.path))
            else:
                log.warn("dns_restore_skipped", file=str(self.path), reason="changed since; left")
            self.saved.unlink(missing_ok=True)
        except OSError as exc:
            raise ResolverError(
                f"cannot restore {self.path}: {exc.strerror or exc}",
                advice=f"the original is saved in {self.saved}",
            ) from None
        self.saved = None


Run = Callable[[list[str]], None]


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if result.returncode != 0:
        raise ResolverError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")


class Resolvectl:
    """systemd-resolved: per-link servers and routing domains on the TUN."""

    def __init__(self, ifname: str, run: Run = _run) -> None:
        self.ifname = ifname
        self.run = run
        self.applied = False

    def apply(self, servers: Servers, search: Sequence[str]) -> None:
        self.run(["resolvectl", "dns", self.ifname, *map(str, servers)])
        self.run(["resolvectl", "domain", self.ifname, *search])
        self.applied = True
        log.event("dns_applied", via="resolvectl", dev=self.ifname)

    def restore(self) -> None:
        if self.applied:
            self.run(["resolvectl", "revert", self.ifname])
            self.applied = False


def choose(path: Path, state_dir: Path, ifname: str) -> Resolver:
    """resolvectl where systemd-resolved owns resolv.conf, the file itself otherwise."""
    managed = path.is_symlink() and "/run/systemd/resolve/" in os.path.realpath(path)
    if managed and shutil.which("resolvectl"):
        return Resolvectl(ifname)
    return ResolvConf(path, state_dir)
