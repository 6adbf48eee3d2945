"""The gateway: `gateway` accepts and admits clients; `host` prepares the machine it runs on
(the listening socket, the TUN or TAP device, its address, forwarding and routes)."""
