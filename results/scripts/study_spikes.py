"""Study (a'): long conventional runs on a small subset, to look for periodic destabilizations."""

import logging

import torch

torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
from spherelab.sweep.run import run_sweep
from spherelab.sweep.spec import SweepSpec

spec = SweepSpec(
    elrs=(1e-3,),
    model="convnet_si",
    dataset="fashion_mnist",
    epochs=100,
    overrides={
        "model.width": 8,
        "data.train_subset": 512,
        "data.test_subset": 1000,
        "data.batch_size": 32,
        "train.eval_batch_size": 32,
        "train.checkpoints": "last",
        "optim.mode": "conventional",
        "optim.momentum": 0.9,
        "optim.lr": 0.03,
        "train.records": 51,
        "train.record_schedule": "linear",
    },
    axes={"optim.weight_decay": (1e-2, 3e-2)},
    name="spike_hunt",
)
run_sweep(spec, "/work/main/results/conventional/runs/spikes", report=False)
