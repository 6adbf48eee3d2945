"""The gateway's run: set up the machine, wire the event loop, wait for a stop, undo it all.

Apart from `gateway` because it is plumbing, not policy: which readers, signals and timers the
loop holds (SIGHUP and `vpn reload` → `vpn.server.reload`; the metrics endpoint), and that each
is removed again (an ExitStack), whatever ends the run.
"""

from __future__ import annotations

import contextlib
import functools
import signal
from concurrent.futures import ThreadPoolExecutor

from vpn import control, log
from vpn.config import ServerConfig
from vpn.datapath.keepalive import keep_alive
from vpn.iface.netconf import NetConf
from vpn.protocol import MsgType
from vpn.server import host, identity, metrics
from vpn.server.acceptor import Acceptor
from vpn.server.gateway import Gateway
from vpn.server.reload import Reread, reload
from vpn.server.revocation import CRL_POLL, every


async def serve(config: ServerConfig, reread: Reread | None = None) -> None:
    """Run a gateway until SIGTERM or SIGINT; `reread` loads the settings again on reload."""
    await run(Gateway(config), reread)


async def run(gateway: Gateway, reread: Reread | None = None) -> None:
    """Open the device, listen, serve until stopped; every change undone on the way out."""
    config, pool = gateway.config, gateway.pool
    # pyroute2 runs its own event loop per thread: all netlink work happens on one thread
    # of its own, never on this loop's.
    netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink")
    net: NetConf | None = None
    try:
        net = await gateway.loop.run_in_executor(netlink, NetConf)
        await gateway.loop.run_in_executor(netlink, gateway.configure, net)
        assert gateway.tun is not None
        device = gateway.tun
        gateway.forwarder = forwarder = gateway.forwarder_for(device)
        with contextlib.ExitStack() as stack:
            listener = stack.enter_context(host.listen(*gateway.bind))
            kill = functools.partial(identity.kill, gateway.table)
            live = functools.partial(reload, gateway, reread)
            commands: dict[str, control.Handler] = {"kill": kill, "reload": lambda _: live()}
            status = await control.serve(config.control, gateway.status, commands)
            stack.callback(status.close)
            if config.metrics:
                scrape = await metrics.serve(config.metrics, metrics.registry_for(gateway))
                stack.callback(scrape.close)
            gateway.loop.add_reader(device.fd, forwarder.from_device)
            stack.callback(gateway.loop.remove_reader, device.fd)
            acceptor = Acceptor(gateway.loop, listener, gateway.limits, gateway.on_accept)
            acceptor.start()
            stack.callback(acceptor.stop)
            for sig in (signal.SIGTERM, signal.SIGINT):
                gateway.loop.add_signal_handler(sig, gateway.stopping.set)
                stack.callback(gateway.loop.remove_signal_handler, sig)
            gateway.loop.add_signal_handler(signal.SIGHUP, live)
            stack.callback(gateway.loop.remove_signal_handler, signal.SIGHUP)
            watch = gateway.loop.create_task(every(CRL_POLL, gateway.reload_crl))
            stack.callback(watch.cancel)
            timers = gateway.loop.create_task(
                keep_alive(
                    gateway.table.connected,
                    config.keepalive,
                    config.dead_peer,
                    f"nothing received for {config.dead_peer:g} s",
                )
            )
            stack.callback(timers.cancel)
            log.event(
                "listening",
                listen=config.listen,
                tun=device.name,
                mode="tap" if gateway.tap else "tun",
                address="-"
                if gateway.tap
                else f"{gateway.pool.server_address}/{gateway.prefixlen}",
                pool=str(pool.network),
                routes=",".join(config.route) or "-",
                offload=bool(gateway.offset),
            )
            await gateway.stopping.wait()
            for session in gateway.table.everyone():
                session.close("server shutting down", kind=MsgType.BYE)
    finally:
        if net is not None:
            await gateway.loop.run_in_executor(netlink, net.close)
        if gateway.tun is not None:
            gateway.tun.close()
        netlink.shutdown()
        log.event("stopped")
