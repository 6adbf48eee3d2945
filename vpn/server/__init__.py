"""The gateway: `gateway` admits clients (handshake, HELLO, password, lease, CONFIG) and reports
status; `acceptor` and `admission` bound what a stranger can hold before logging in; `identity`
and `revocation` bind sessions to certificates and end revoked ones; `host` prepares the machine
(listener, TUN or TAP, address, forwarding, routes); `runtime` wires it all into the event loop."""
