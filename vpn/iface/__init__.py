"""The tunnel's network interface on this machine: opening TUN/TAP devices (`tun`, `vnet`,
`tun_writes`) and the address, route and sysctl changes around them, each undone on close
(`netconf`, with `undo`, `routes`, `sysctl`, `netlink`). The only place that talks to the kernel
about interfaces."""
