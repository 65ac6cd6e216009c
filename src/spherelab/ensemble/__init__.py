"""The ensemble engine: K runs that differ only in ELR and seed trained as ONE module.

Grouped convolutions / batched matmuls with per-member BatchNorm, one SphereSGD(members=K)
retraction per member, per-member metrics, and exactly the single-run files per member.
"""

from spherelab.ensemble.engine import train_ensemble
from spherelab.ensemble.modules import ensemble_skeleton
from spherelab.ensemble.pack import can_pack, pack_key, pack_states, unpack_state

__all__ = [
    "can_pack",
    "ensemble_skeleton",
    "pack_key",
    "pack_states",
    "train_ensemble",
    "unpack_state",
]
