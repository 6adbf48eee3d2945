"""The runtimes that realise a lab: one interface (base), one registry of names (registry), one
subpackage per backend. Adding a backend is a new subpackage and one registry entry.
"""
