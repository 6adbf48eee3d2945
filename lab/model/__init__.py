"""The lab's pure model: topology dataclasses, the compose reader, errors and run records.

Nothing here starts a process or talks to Docker or the kernel's netlink, so the model can be
read, tested and drawn without any runtime.
"""

from lab.model.errors import LabError, TopologyError
from lab.model.topology import Attachment, Network, Node, Topology

__all__ = ["Attachment", "LabError", "Network", "Node", "Topology", "TopologyError"]
