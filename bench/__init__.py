"""Benchmarks of the VPN in the lab: `python -m bench` (paths) and `python -m bench.scale`."""
