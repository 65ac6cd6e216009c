"""Run the paper's own training script (its `train.main`) on a tiny synthetic data set, so the
tests get real official checkpoints (`checkpoint-<epoch>.pt`) written by the paper's code.

Only the data loaders are replaced (the paper's loaders read CIFAR from disk); the model,
head, optimizer, fixed-ELR rule and checkpoint saving are the paper's own code paths.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from _official import cuda_noop

IMAGE = (3, 32, 32)


class _Loader(list):
    """A list of (inputs, labels) batches with the `.dataset` length the paper's loops read."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__(batches)
        self.dataset = range(sum(len(y) for _, y in batches))


def tiny_loaders(n_train: int = 24, n_test: int = 16, batch: int = 8, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)

    def batches(n: int) -> _Loader:
        x = torch.randn(n, *IMAGE, generator=gen)
        y = torch.randint(0, 10, (n,), generator=gen)
        return _Loader([(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)])

    return {"train": batches(n_train), "test": batches(n_test)}


def paper_flags(model: str, width: int, out: Path, epochs: int = 2, elr: float = 1e-3) -> list:
    """The paper's run script's flags (run_train_and_test.py) at a tiny width."""
    af = model.endswith("Af")
    # the paper's train.py refuses --fix_elr for ResNet18SIAf: it trains at a fixed lr
    rate = ["--lr_init", "0.01"] if model == "ResNet18SIAf" else ["--fix_elr", "--elr", str(elr)]
    return [*rate,
        "--dir", str(out), "--model", model, "--num_channels", str(width), "--depth", "3",
        "--epochs", str(epochs),
        "--noninvlr", "-1" if af else "0.0", "--wd", "0.0", "--momentum", "0.0",
        "--save_freq", "1", "--eval_freq", "1000", "--init_scale", "-1" if af else "10",
        "--same_last_layer", "--use_test", "--no_schedule", "--no_aug", "--seed", "1",
    ]  # fmt: skip


def run_official_training(modules: dict[str, Any], flags: list[str], loaders: dict) -> Path:
    """Run the paper's `train.main()` with `flags`; returns the directory of its checkpoints."""
    train = modules["train"]
    saved_argv, saved_env, saved_loaders = sys.argv, dict(os.environ), train.data.loaders
    sys.argv = ["train.py", *flags]
    train.data.loaders = lambda *args, **kwargs: (loaders, 10)
    try:
        with cuda_noop():
            train.main()
    finally:
        sys.argv, train.data.loaders = saved_argv, saved_loaders
        os.environ.clear()
        os.environ.update(saved_env)  # main() sets CUDA_VISIBLE_DEVICES
    return Path(flags[flags.index("--dir") + 1]) / "trial_0"
