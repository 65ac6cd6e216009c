"""How K runs share one module: packed layers (grouped convolutions, batched matmuls, per-member
norms), packing and unpacking member states, and per-member math on packed tensors. The
training engine (spherelab.train) uses it to train a pack of K runs as one network."""

from spherelab.ensemble.modules import ensemble_skeleton
from spherelab.ensemble.pack import can_pack, pack_key, pack_states, unpack_state

__all__ = ["can_pack", "ensemble_skeleton", "pack_key", "pack_states", "unpack_state"]
