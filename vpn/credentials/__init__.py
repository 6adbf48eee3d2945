"""Credentials: the PKI (CA, certificates, CRL), the password file, and the TLS contexts that
use them. Kept together because they change together: a new kind of certificate touches the
issuer, the lab set and the context that checks it."""
