"""The swarm backend: one topology over the engines of a Docker swarm, one container per node.

Importing this package imports nothing of the Docker SDK; backend.SwarmBackend needs it.
cluster makes a real two-engine swarm on one machine for the tests (`make swarm-up`).
"""
