"""Cost of the chaos meter per step, against a plain training step (docs/chaos.md).

For one run at initialisation (config below, ELR 1e-2), times per step, interleaved over
repeats (medians):
- train:        the run's own float32 training step (the engine's eager step);
- tangent f64:  one step of spherelab.chaos.tangent_trace on a float64 copy (forward, backward
                with a graph, one Hessian-vector product, the retraction's derivative);
- tangent f32:  the same in float32 (faster, cruder: docs/chaos.md);
- twins f64:    one step of spherelab.chaos.twin_trace (two float64 training steps, the angle
                between them and the renormalisation).

    python benchmarks/bench_lyapunov.py [--model mlp_si|convnet_si] [--steps 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch

from spherelab.chaos import (
    LyapunovOptions,
    copy_in,
    params_getter,
    run_batches,
    tangent_trace,
    training_step,
    twin_trace,
)
from spherelab.config import Config, apply_overrides
from spherelab.train import build_run
from spherelab.train.losses import batch_loss

CONFIGS = {
    # the demo's model and data (spherelab demo)
    "mlp_si": {"model.name": "mlp_si", "model.width": 128, "model.depth": 3,
               "data.name": "mnist1d", "data.batch_size": 128},
    # the Fashion-MNIST map's model, on synthetic images of the same shape (no download)
    "convnet_si": {"model.name": "convnet_si", "model.width": 8,
                   "data.name": "synthetic:1x28x28:2000:100:10", "data.batch_size": 128},
}  # fmt: skip


def _timers(model: str, steps: int) -> dict[str, object]:
    cfg = apply_overrides(Config(), CONFIGS[model] | {"optim.elr": 1e-2, "train.device": "cpu"})
    run = build_run(cfg)
    params_of = params_getter(run.si_names)
    step = training_step(cfg.train.loss)

    def train() -> None:
        batches = run_batches(run)
        for _, b in zip(range(steps), batches):
            step(run.model, run.optimizer, b)

    def tangent(dtype: torch.dtype) -> None:
        model, opt = copy_in(run.model, run.optimizer, params_of, dtype)

        def loss_of(b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return batch_loss(model(b[0].to(dtype)), b[1], cfg.train.loss)

        tangent_trace(loss_of, params_of(model), opt, run_batches(run), steps)

    def twins() -> None:
        twin_trace(
            step, run.model, run.optimizer, params_of, run_batches(run), steps,
            angle=LyapunovOptions().twin_angle,
        )  # fmt: skip

    return {
        "train": train,
        "tangent f64": lambda: tangent(torch.float64),
        "tangent f32": lambda: tangent(torch.float32),
        "twins f64": twins,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(CONFIGS), default="mlp_si")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    timers = _timers(args.model, args.steps)
    times: dict[str, list[float]] = {k: [] for k in timers}
    for _, (name, fn) in itertools.product(range(args.repeats), timers.items()):
        start = time.perf_counter()
        fn()
        times[name].append((time.perf_counter() - start) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": args.model,
        "steps": args.steps,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "seconds_per_step": med,
        "x_train_step": {k: v / med["train"] for k, v in med.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
