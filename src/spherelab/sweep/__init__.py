"""ELR sweeps: the spec and its expansion (spec), the sweep directory's files (files), the tasks
and executors that run them (tasks, executors), and running, resuming and refining (run)."""

from spherelab.sweep.executors import EXECUTORS
from spherelab.sweep.files import read_summary
from spherelab.sweep.run import boundaries_by_group, relabel_sweep, run_sweep
from spherelab.sweep.spec import SweepSpec, expand, load_spec, parse_elrs, parse_seeds

__all__ = [
    "EXECUTORS",
    "SweepSpec",
    "boundaries_by_group",
    "expand",
    "load_spec",
    "parse_elrs",
    "parse_seeds",
    "read_summary",
    "relabel_sweep",
    "run_sweep",
]
