"""Study (a): conventional lr x wd grid + a fixed-ELR map sweep of the same model/data."""

import logging
import sys

import torch

torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
from spherelab.sweep.run import run_sweep
from spherelab.sweep.spec import SweepSpec

COMMON = {
    "model.width": 8,
    "data.train_subset": 2000,
    "data.test_subset": 2000,
    "train.eval_batch_size": 128,
    "train.checkpoints": "last",
}
EPOCHS = 20
which = sys.argv[1]
root = "/work/main/results/conventional"
if which == "conv":
    spec = SweepSpec(
        elrs=(1e-3,),
        model="convnet_si",
        dataset="fashion_mnist",
        epochs=EPOCHS,
        overrides={
            **COMMON,
            "optim.mode": "conventional",
            "optim.momentum": 0.9,
            "train.records": EPOCHS // 2 + 1,
            "train.record_schedule": "linear",
        },
        axes={"optim.lr": (0.01, 0.1, 1.0), "optim.weight_decay": (1e-3, 1e-2)},
        name="conventional_grid",
    )
    run_sweep(spec, f"{root}/runs/grid", report=False)
else:
    spec = SweepSpec(
        elrs=(1e-4, 5e-4, 2e-3, 5e-3, 2e-2, 1e-1),
        model="convnet_si",
        dataset="fashion_mnist",
        epochs=EPOCHS,
        overrides={**COMMON, "train.records": 10},
        name="fixed_elr_map",
    )
    run_sweep(spec, f"{root}/runs/map", report=False)
