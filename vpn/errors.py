"""Every error vpnlab raises on purpose, in one family under `VpnError`.

One base lets the command line catch them in one place and print one line; the subclasses say
which part of the system to look at. Each carries the message (what happened and why) and,
where there is one, `advice`: what the user can do about it. `str()` joins the two with " — ",
the way every message of this project reads.
"""

from __future__ import annotations


class VpnError(Exception):
    """A failure the user can understand and act on; str() is the line they see."""

    def __init__(self, message: str, *, advice: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.advice = advice

    def __str__(self) -> str:
        return f"{self.message} — {self.advice}" if self.advice else self.message


class ConfigError(VpnError):
    """A setting is missing or wrong; the message names it and its source."""


# -- credentials: certificates, TLS contexts, passwords ----------------------------------------


class CredentialError(VpnError):
    """A certificate, key, CRL or password file is missing, broken or refused."""


class PkiError(CredentialError):
    """A PKI operation (CA, certificate, CRL) failed; the message says what, why and what to do."""


class TlsError(CredentialError):
    """A TLS context could not be built (a missing or broken file), or a peer has no identity."""


class AuthError(CredentialError):
    """A password file or entry is unusable; the message says where and why."""


# -- the network interface: TUN/TAP devices, addresses, routes, sysctls ------------------------


class InterfaceError(VpnError):
    """Setting up the tunnel's interface failed; `code` is the errno behind it, if any."""

    def __init__(self, message: str, code: int | None = None, *, advice: str = "") -> None:
        super().__init__(message, advice=advice)
        self.code = code


class NetConfError(InterfaceError):
    """A netlink or sysctl change failed (or could not be undone)."""


class TunError(InterfaceError, OSError):
    """Opening or using a TUN device failed. It is an OSError too, with `errno` set, because
    callers treat a TUN that cannot be opened like any other failed system call."""

    def __init__(self, code: int, message: str, *, advice: str = "") -> None:
        OSError.__init__(self, code, f"{message} — {advice}" if advice else message)
        self.message = message
        self.advice = advice
        self.code = code

    def __str__(self) -> str:
        return str(self.strerror)


# -- talking to the peer ------------------------------------------------------------------------


class ResolverError(InterfaceError):
    """The resolver configuration (resolv.conf, resolvectl) could not be changed or restored."""


class ProtocolError(VpnError):
    """The peer broke the protocol; the message is the reason sent back in ERROR and logged."""


class PoolExhausted(VpnError):
    """No free address is left in the pool."""


class LinkError(VpnError):
    """The client's connection to the gateway ended, or could not be made."""


class Refused(LinkError):
    """The gateway refused our credentials, or we refused the gateway: retrying cannot help."""


class Disconnected(LinkError):
    """The session ended; the reason is the message."""


# -- the local control socket ------------------------------------------------------------------


class ControlError(VpnError):
    """The control socket cannot be bound, is refused to us, or belongs to someone untrusted."""
