"""The lab's errors, in one place so the model and every backend raise the same classes.

Each message says what failed, why, and what to do; the CLI prints it as one line.
"""

from __future__ import annotations


class LabError(RuntimeError):
    """A lab operation failed; the message says what, why and what to do."""


class TopologyError(LabError):
    """A compose file does not describe a lab the backends can build."""
