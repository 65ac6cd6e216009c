"""A sweep with the chaos meter: train the grid (run_sweep, with any --refine rounds of the regime
boundaries), measure λ of every run from its final checkpoint (spherelab.chaos), then bisect the
1|2 boundary on λ: each round adds the geometric midpoint of the bracket where λ turns reliably
positive (spherelab.chaos_boundary) to the ELR grid, for every seed, trains it and measures it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

from spherelab.chaos import LyapunovOptions, lyapunov_sweep
from spherelab.chaos_boundary import lyapunov_boundary
from spherelab.config import ConfigError
from spherelab.sweep.files import read_summary
from spherelab.sweep.run import run_sweep
from spherelab.sweep.spec import SAME_ELR, SweepSpec

log = logging.getLogger("spherelab")


def run_lyapunov_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    refine: int = 0,
    opts: LyapunovOptions | None = None,
    **sweep_kwargs: Any,
) -> Path:
    """run_sweep(spec, out_dir, refine=refine, **sweep_kwargs), λ of every run, then `refine`
    rounds of bisection on λ (new ELRs are added to the spec, so sweep.json lists them); returns
    summary.csv. Runs already measured with the same options are not measured again."""
    if spec.axes:
        raise ConfigError(
            f"--lyapunov bisects one ELR axis; this sweep has extra axes {list(spec.axes)}: "
            "run one sweep per axis value"
        )
    out, opts = Path(out_dir), opts or LyapunovOptions()
    path = run_sweep(spec, out, refine=refine, **sweep_kwargs)
    lyapunov_sweep(out, opts)
    for round_ in range(refine):
        bracket = lyapunov_boundary(read_summary(path))
        if bracket is None or any(
            math.isclose(bracket.mid, e, rel_tol=SAME_ELR) for e in spec.elrs
        ):
            log.info("λ bisection: no bracket left to split")
            break
        log.info("λ bisection round %d: ELR %.4g in [%.4g, %.4g]", round_ + 1, bracket.mid,
                 bracket.lo, bracket.hi)  # fmt: skip
        spec = dataclasses.replace(spec, elrs=tuple(sorted((*spec.elrs, bracket.mid))))
        path = run_sweep(spec, out, refine=refine, **sweep_kwargs)
        lyapunov_sweep(out, opts)
    return path
