"""SWA on the sphere and geodesics, on the fine-tune study's best pre-training run (CPU, ~3 min)."""

import json

import torch

torch.set_num_threads(1)
from pathlib import Path

from spherelab.config import apply_overrides, load_json
from spherelab.report.style import save_figure
from spherelab.sphere.check import si_parameters
from spherelab.studies.averaging import geodesic, geodesic_figure, load_states, swa
from spherelab.io import write_json
from spherelab.train import checkpoints as ckpt
from spherelab.train.engine import build_run, train_run
from spherelab.train.losses import batch_sums, get_loss

root = Path("/work/main/results/finetune")
res = json.loads((root / "finetune.json").read_text())
p, f_best = res["best_pretrain_elr"], res["best_finetune_elr"]
pre_dir = next(
    d
    for d in (root / "runs/pretrain/runs").iterdir()
    if load_json(d / "config.json").optim.elr == p
)
pre_cfg = load_json(pre_dir / "config.json")
K = 4  # continue at ELR p for K epochs, a checkpoint per epoch, then average them
cont_cfg = apply_overrides(
    pre_cfg,
    {
        "train.epochs": K,
        "train.records": K + 1,
        "train.record_schedule": "linear",
        "train.checkpoints": "log",
        "train.init_from": str(ckpt.list_checkpoints(pre_dir)[-1]),
    },
)
cont = root / "runs/swa/continue"
train_run(cont_cfg, cont)
paths = [q for q in ckpt.list_checkpoints(cont) if ckpt.checkpoint_step(q) > 0]
run = build_run(pre_cfg)
model, data = run.model, run.data
train_batches = run.recorder.train_batches


@torch.no_grad()
def test_acc(m):
    m.eval()
    loss_fn = get_loss("cross_entropy")
    sums = [batch_sums(m, loss_fn, x, y) for x, y in run.recorder.test_batches]
    m.train()
    return float(sum(c for _, c in sums)) / data.n_test


states = load_states(paths)
last_alone = build_run(pre_cfg).model
last_alone.load_state_dict(states[-1])
swa(model, states, train_batches)
out = {
    "pretrain_elr": p,
    "regime": res["best_pretrain_regime"],
    "swa_checkpoints": len(states),
    "swa_test_acc": test_acc(model),
    "last_iterate_test_acc": test_acc(last_alone),
    "best_finetune_test_acc": res["best_finetune_test_acc"],
}


def si_of(state):
    names = {id(q): n for n, q in model.named_parameters()}
    return [state[names[id(q)]] for q in si_parameters(model)]


ft = {
    f: ckpt.load_checkpoint(
        ckpt.list_checkpoints(root / "runs/finetune" / f"pre_{p:.4g}__ft_{f:.4g}__seed_0")[-1]
    )["model"]
    for f in sorted({g["finetune_elr"] for g in res["grid"]})
}
fa, fb = list(ft)
swa_si = [q.detach().clone() for q in si_parameters(model)]
geo = {
    f"fine-tunes f={fa:g} vs f={fb:g}": geodesic(
        model, si_of(ft[fa]), si_of(ft[fb]), train_batches
    ),
    f"SWA vs fine-tune f={f_best:g}": geodesic(model, swa_si, si_of(ft[f_best]), train_batches),
    "first vs last continued iterate": geodesic(
        model, si_of(states[0]), si_of(states[-1]), train_batches
    ),
}
out["geodesics"] = {
    k: {
        "barrier": v.barrier,
        "barrier_to_mean": v.barrier_to_mean,
        "angle": v.angle,
        "losses": v.losses,
    }
    for k, v in geo.items()
}
save_figure(geodesic_figure(geo), root / "figures" / "geodesic")
write_json(root / "swa_geodesic.json", out)
print(json.dumps({k: v for k, v in out.items() if k != "geodesics"}, indent=1))
print({k: (round(v["barrier"], 4), round(v["angle"], 3)) for k, v in out["geodesics"].items()})
