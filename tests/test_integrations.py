"""TensorBoard scalars (spherelab's own runs with --log tensorboard, and the monitor) read back
with TensorBoard's reader, and the Lightning callback in a real Trainer on the CPU."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from spherelab.cli import main
from spherelab.commands.sweep import spec_from_args
from spherelab.config import Config, apply_overrides
from spherelab.io import read_jsonl
from spherelab.monitor import RegimeMonitor
from spherelab.train import train_run


def _scalars(log_dir):
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_with_log_tensorboard_writes_every_record_as_scalars(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--model", "mlp_si", "--dataset", "synthetic:40:256", "--epochs", "3",
            "--set", "model.width=16", "--set", "train.records=3", "--set", "data.batch_size=64",
            "--device", "cpu", "--log", "tensorboard", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    got = _scalars(out / "tensorboard")
    assert [s for s, _ in got["train_loss"]] == [r["step"] for r in rows]
    assert [v for _, v in got["train_loss"]] == pytest.approx([r["train_loss"] for r in rows])
    assert any(tag.startswith("layer_norms/") for tag in got)


def test_the_tensorboard_hook_closes_each_run_at_its_last_record(tmp_path):
    from spherelab.diagnose import hooks_for
    from spherelab.train.tensorboard import TensorBoardHook

    cfg = apply_overrides(
        Config(),
        {"train.log": "tensorboard", "data.name": "synthetic:40:128", "model.width": 8,
         "train.epochs": 2, "train.records": 2, "train.device": "cpu"},
    )  # fmt: skip
    hooks = hooks_for(cfg)
    (hook,) = [h for h in hooks if isinstance(h, TensorBoardHook)]
    train_run(cfg, tmp_path / "run", hooks=hooks)
    assert hook.open_runs == 0
    assert _scalars(tmp_path / "run" / "tensorboard")["train_loss"][-1][0] == 2 * 1  # 128 / 128


def test_train_log_without_its_hook_is_refused(tmp_path):
    cfg = apply_overrides(Config(), {"train.log": "tensorboard", "data.name": "synthetic:40:256"})
    with pytest.raises(ValueError, match="hooks_for"):
        train_run(cfg, tmp_path / "run")


def test_an_unknown_train_log_is_a_one_line_error(tmp_path, capsys):
    argv = ["train", "--set", "train.log=wandb", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "train.log='wandb'" in capsys.readouterr().err


def test_sweep_log_flag_sets_train_log_for_every_run():
    from spherelab.cli import build_parser

    args = build_parser().parse_args(
        ["sweep", "--elrs", "1e-3", "--log", "tensorboard", "--out", "unused"]
    )

    assert spec_from_args(args).overrides == {"train.log": "tensorboard"}


def _module_and_data():
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 2, (64,))
    net = nn.Sequential(
        nn.Linear(5, 8), nn.BatchNorm1d(8, affine=False), nn.ReLU(), nn.Linear(8, 2)
    )
    net[3].requires_grad_(False)
    return net, DataLoader(TensorDataset(x, y), batch_size=16)


def test_the_monitor_writes_tensorboard_scalars(tmp_path):
    net, loader = _module_and_data()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-3)
    with RegimeMonitor(net, opt, tmp_path / "run", steps_per_epoch=4, si=list(net[0].parameters()),
                       tensorboard=True) as monitor:  # fmt: skip
        for _ in range(2):
            for x, y in loader:
                loss = F.cross_entropy(net(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                monitor.step(loss)
    got = _scalars(tmp_path / "run" / "tensorboard")
    assert [s for s, _ in got["elr"]] == [4, 8]
    assert [v for _, v in got["elr"]] == pytest.approx([r["elr"] for r in monitor.records])


# lightning 2.6's own data loading calls torch's deprecated LeafSpec (torch 2.13); not ours
@pytest.mark.filterwarnings(
    "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning"
)
def test_the_lightning_callback_monitors_a_real_trainer(tmp_path):
    import lightning.pytorch as pl

    from spherelab.monitor.lightning import RegimeCallback

    net, loader = _module_and_data()

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)

    callback = RegimeCallback(tmp_path / "run", si=lambda m: list(m.net[0].parameters()))
    logger = pl.loggers.TensorBoardLogger(tmp_path / "tb", name="", version="")
    trainer = pl.Trainer(
        max_epochs=3, accelerator="cpu", callbacks=[callback], logger=logger, log_every_n_steps=1,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Module(), loader)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert all(r["momentum"] == 0.9 and r["elr"] > 0 for r in rows)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert set(json.loads((tmp_path / "run" / "config.json").read_text())["monitor"]["si_groups"][
        "si"]) == {"net.0.weight", "net.0.bias"}  # fmt: skip
    logged = _scalars(tmp_path / "tb")  # the records reach the trainer's logger
    assert [s for s, _ in logged["spherelab/elr"]] == [4, 8, 12]
    assert [v for _, v in logged["spherelab/elr"]] == pytest.approx([r["elr"] for r in rows])


def test_log_tensorboard_without_tensorboard_installed_is_a_one_line_error(
    tmp_path, monkeypatch, capsys
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    argv = ["train", "--log", "tensorboard", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "spherelab[tensorboard]" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written
