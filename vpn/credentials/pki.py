"""The PKI as one namespace: what `vpn pki`, the lab and the tests call.

The work is done in the modules named below (one job each); this module only gathers their
public names, so callers need not know which file holds which step.
"""

from __future__ import annotations

from vpn.credentials.ca import init_ca
from vpn.credentials.certificates import issue, list_certs
from vpn.credentials.crl import revoke, write_crl
from vpn.credentials.directory import (
    CA_CERT,
    CA_KEY,
    CLOCK_SKEW,
    CRL_FILE,
    INDEX_FILE,
    Kind,
    check_name,
    load_cert,
)
from vpn.credentials.lab import LAB_RESERVED, lab_pki
from vpn.errors import PkiError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CLOCK_SKEW",
    "CRL_FILE",
    "INDEX_FILE",
    "LAB_RESERVED",
    "Kind",
    "PkiError",
    "check_name",
    "init_ca",
    "issue",
    "lab_pki",
    "list_certs",
    "load_cert",
    "revoke",
    "write_crl",
]
