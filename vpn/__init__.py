"""vpn: a TLS 1.3 VPN over TUN devices."""
