"""The client: `connection` logs in to the gateway, moves packets and reconnects; `tunnel` holds
the TUN device and routes the gateway pushes; `login` finds the name and password it offers."""
