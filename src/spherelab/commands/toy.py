"""`spherelab toy`: the SI quadratic toy model on the sphere — theory vs simulation."""

from __future__ import annotations

import argparse
from pathlib import Path

from spherelab.toy.run import run_toy


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "toy",
        help="the three regimes on the SI toy model: theory and simulation",
        description="Simulate SGD on the sphere for f_i(u) = (a_i.u)^2 / 2 over an "
        "ELR grid and compare with the Lyapunov threshold and the large-ELR limit.",
    )
    p.add_argument("--d", type=int, default=20, help="dimension of the sphere's ambient space")
    p.add_argument("--n", type=int, default=10, help="number of samples (n < d)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("toy_out"))
    p.add_argument("--steps", type=int, default=None, help="SGD steps per ELR (default: auto)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    result = run_toy(d=args.d, n=args.n, seed=args.seed, out=args.out, steps=args.steps)
    print(
        f"Lyapunov threshold (predicted 1|2 boundary): {result['lyapunov_threshold']:.4g} "
        f"± {result['lyapunov_threshold_err']:.2g}"
    )
    print(
        f"large-ELR limit loss {result['large_elr_loss']:.4g}, uniform-sphere loss "
        f"{result['uniform_loss']:.4g}, full-batch GD bound {result['gd_threshold']:.4g}"
    )
    for row in result["results"]:
        print(f"  elr {row['elr']:<10.4g} final loss {row['final_loss']:<10.4g} {row['regime']}")
    print(f"written: {args.out / 'toy.json'}, {args.out / 'toy.html'}")
    return 0
