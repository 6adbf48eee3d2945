"""The Docker backend (compose services, one container per node), one module per job.

Importing this package imports nothing of the Docker SDK: lab.backends.docker.ping works
without it; backend.DockerBackend needs it.
"""
