"""results/chaos/toy.json: λ of QuadraticSphereToy(d=20, n=10, seed=0) measured by the generic
tangent-map code (spherelab.toy.chaos, which drives spherelab.chaos.tangent_trace) against the
toy's own theory (spherelab.toy.theory), and the measured zero crossing against the predicted
1|2 threshold. docs/chaos.md quotes these numbers.

    PYTHONPATH=src python results/scripts/chaos_toy.py   (about 3 minutes on one CPU core)
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from spherelab.toy import QuadraticSphereToy
from spherelab.toy.chaos import measured_lyapunov, measured_threshold

FACTORS = (0.5, 0.75, 1.25, 1.5, 2.0)  # ELRs as multiples of the predicted threshold
SEEDS, STEPS = 4, 8000


def main() -> None:
    toy = QuadraticSphereToy(d=20, n=10, seed=0)
    eta1, eta1_err = toy.lyapunov_threshold()
    etas = [f * eta1 for f in FACTORS]
    theory = toy.lyapunov_exponent(etas, steps=20_000)
    rows = []
    for f, eta, lam in zip(FACTORS, etas, theory):
        per_seed = [measured_lyapunov(toy, eta, STEPS, seed=s) for s in range(SEEDS)]
        values = [e.lyapunov for e in per_seed]
        mean = statistics.fmean(values)
        rows.append(
            {
                "factor": f,
                "elr": eta,
                "theory": float(lam),
                "measured": mean,
                "measured_err": statistics.stdev(values) / SEEDS**0.5,
                "relative_error": abs(mean - float(lam)) / abs(float(lam)),
            }
        )
    crossing = measured_threshold(toy, 0.7 * eta1, 1.4 * eta1, steps=STEPS, rounds=8)
    out = {
        "instance": {"d": 20, "n": 10, "seed": 0, "batch_size": 1},
        "steps_per_seed": STEPS,
        "seeds": SEEDS,
        "predicted_threshold": eta1,
        "predicted_threshold_err": eta1_err,
        "measured_crossing": crossing,
        "crossing_relative_error": abs(crossing - eta1) / eta1,
        "exponents": rows,
        "max_relative_error": max(r["relative_error"] for r in rows),
    }
    path = Path("results/chaos/toy.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
