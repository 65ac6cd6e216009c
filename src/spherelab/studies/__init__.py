"""Studies built on the engine and the sweeps: conventional training read on the sphere (with its
loss spikes and the regime lens), weight averaging on the sphere, and pre-train / fine-tune."""

from spherelab.studies.averaging import average_directions, geodesic, slerp, swa
from spherelab.studies.conventional import angle_table, equilibrium_summary, summarize_grid
from spherelab.studies.finetune import analyse, run_finetune
from spherelab.studies.lens import lens, write_lens
from spherelab.studies.spikes import detect_spikes

__all__ = [
    "analyse",
    "angle_table",
    "average_directions",
    "detect_spikes",
    "equilibrium_summary",
    "geodesic",
    "lens",
    "run_finetune",
    "slerp",
    "summarize_grid",
    "swa",
    "write_lens",
]
