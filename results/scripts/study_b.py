"""Study (b): pre-train at ELR p (regimes 1-3), fine-tune at ELR f (regime 1), scratch baseline."""

import logging

import torch

torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
from spherelab.studies.finetune import run_finetune

COMMON = {
    "model.width": 8,
    "data.train_subset": 2000,
    "data.test_subset": 2000,
    "train.eval_batch_size": 128,
    "train.records": 5,
}
print(
    run_finetune(
        "convnet_si",
        "fashion_mnist",
        [5e-4, 2e-3, 5e-3, 3e-2],
        [1e-4, 5e-4],
        pre_epochs=8,
        ft_epochs=4,
        out="/work/main/results/finetune",
        overrides=COMMON,
    )
)
