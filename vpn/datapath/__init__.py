"""The packet path: framed TLS connections (`channel`), the gateway's sessions and their table
(`sessions`), where packets go in layer 3 (`router`) or layer 2 (`switch`), and the keepalive
timer both ends share. Nothing here knows the gateway or the client that use it."""
