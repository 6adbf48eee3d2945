"""The netns backend (a network namespace per node, bridges in a lab namespace), one module per
job; backend.NetnsBackend puts them together.
"""
