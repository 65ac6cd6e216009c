"""The paper's public code's networks and checkpoints in spherelab: ``from_official`` turns an
official state_dict into the equal spherelab model; ``import_official`` turns official
checkpoints into a spherelab run directory (docs/paper_parity.md#networks-and-checkpoints)."""

from spherelab.official.networks import NETWORKS, from_official, official_config
from spherelab.official.runs import import_official

__all__ = ["NETWORKS", "from_official", "import_official", "official_config"]
