"""The training engine: run files, records, bitwise resume, non-finite losses, directory safety."""

import json

import pytest
import torch

from spherelab.config import Config, apply_overrides
from spherelab.io import read_jsonl as read_records
from spherelab.regimes import REGIMES, UNDETERMINED
from spherelab.train.checkpoints import record_steps
from spherelab.train.engine import train_run
from spherelab.train.recorder import METRIC_KEYS


def _cfg(**over) -> Config:
    base = {
        "model.name": "mlp_si",
        "model.width": 16,
        "model.depth": 2,
        "data.name": "synthetic:40:256",
        "data.batch_size": 32,
        "train.epochs": 4,
        "train.records": 4,
        "optim.elr": 1e-2,
        "train.device": "cpu",
    }
    return apply_overrides(Config(), base | over)


def test_run_writes_the_contract_files_with_the_required_keys(tmp_path):
    summary = train_run(_cfg(), tmp_path / "run")
    rows = read_records(tmp_path / "run" / "metrics.jsonl")
    assert rows[0]["step"] == 0 and rows[-1]["step"] == summary["step"] == 4 * 8
    for row in rows:
        assert set(METRIC_KEYS) <= set(row)
    assert summary["status"] == "finished"
    # a 4-epoch run is too short for a convergence label: it may be undetermined
    assert summary["regime"] in (*REGIMES, UNDETERMINED) and summary["regime_reason"]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["optim"]["elr"] == 1e-2 and "environment" in saved
    assert (tmp_path / "run" / "summary.json").exists()


def test_sphere_run_keeps_the_si_norm_at_its_initial_value(tmp_path):
    train_run(_cfg(**{"train.dtype": "float64"}), tmp_path / "run")
    norms = [r["si_norm"] for r in read_records(tmp_path / "run" / "metrics.jsonl")]
    assert max(norms) - min(norms) < 1e-9 * norms[0]


def test_resumed_run_matches_an_unbroken_run_bitwise(tmp_path):
    cfg = _cfg(**{"train.epochs": 6, "train.records": 6, "optim.momentum": 0.5})
    full = train_run(cfg, tmp_path / "full")
    # Simulate a kill: drop the last checkpoints and the summary, then resume.
    run = tmp_path / "cut"
    train_run(cfg, run)
    ckpts = sorted((run / "checkpoints").glob("step_*.pt"))
    for path in ckpts[-2:]:
        path.unlink()
    (run / "summary.json").unlink()
    resumed = train_run(cfg, run, resume=True)
    assert resumed["train_loss"] == full["train_loss"]
    a = torch.load(tmp_path / "full" / "checkpoints" / ckpts[-1].name, weights_only=True)
    b = torch.load(ckpts[-1], weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert read_records(run / "metrics.jsonl") == read_records(tmp_path / "full" / "metrics.jsonl")


def test_non_finite_loss_ends_the_run_cleanly(tmp_path, monkeypatch):
    from spherelab.train import loop, step

    calls = {"n": 0}

    def poisoned_step(model, opt, loss, packed=True):
        eager = step.eager_step(model, opt, loss, packed)

        def run(x, y):
            calls["n"] += 1
            if calls["n"] == 10:  # weights blow up mid-run, as in a diverging run
                with torch.no_grad():
                    next(p for p in model.parameters() if p.requires_grad).fill_(float("inf"))
            return eager(x, y)

        return run

    monkeypatch.setattr(loop, "eager_step", poisoned_step)
    summary = train_run(_cfg(), tmp_path / "r")
    assert summary["status"] == "nonfinite"
    assert summary["regime"] == "divergence"
    assert calls["n"] < 20  # it stopped at the first check after the blow-up


def test_directory_with_a_different_run_is_refused(tmp_path):
    train_run(_cfg(), tmp_path / "r")
    with pytest.raises(ValueError, match="different run"):
        train_run(_cfg(**{"optim.elr": 0.5}), tmp_path / "r")


def test_finished_run_is_returned_without_training_again(tmp_path):
    first = train_run(_cfg(), tmp_path / "r")
    mtime = (tmp_path / "r" / "metrics.jsonl").stat().st_mtime_ns
    again = train_run(_cfg(), tmp_path / "r", resume=True)
    assert again["train_loss"] == first["train_loss"]
    assert (tmp_path / "r" / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_conventional_mode_reports_the_effective_elr(tmp_path):
    cfg = _cfg(**{"optim.mode": "conventional", "optim.lr": 0.1, "optim.weight_decay": 5e-4})
    train_run(cfg, tmp_path / "r")
    for row in read_records(tmp_path / "r" / "metrics.jsonl"):
        assert row["elr"] == pytest.approx(0.1 / row["si_norm"] ** 2)


def test_record_steps_are_log_spaced_epochs_with_both_ends():
    steps = record_steps(total_steps=1000 * 10, steps_per_epoch=10, n_records=10)
    assert steps[0] == 0 and steps[-1] == 10000
    assert all(s % 10 == 0 for s in steps)
    gaps = [b - a for a, b in zip(steps[1:], steps[2:])]
    assert gaps == sorted(gaps)


def test_records_report_the_rate_of_the_step_just_taken_and_match_the_ensemble(tmp_path):
    from spherelab.train import train_ensemble

    over = {
        "optim.schedule": "piecewise",
        "optim.schedule_milestones": [2.0],
        "optim.schedule_factors": [0.1],
        "train.records": 5,
        "train.dtype": "float64",
    }
    single = read_records_of(train_run, _cfg(**over), tmp_path / "single")
    train_ensemble(
        [_cfg(**over), _cfg(**over | {"optim.elr": 2e-2})], [tmp_path / "e0", tmp_path / "e1"]
    )
    packed = read_records(tmp_path / "e0" / "metrics.jsonl")
    by_epoch = {r["epoch"]: r["elr"] for r in single}
    assert by_epoch[2.0] == pytest.approx(1e-2)  # epoch 2's last step still ran at the base ELR
    assert by_epoch[4.0] == pytest.approx(1e-3)
    assert [r["elr"] for r in packed] == pytest.approx([r["elr"] for r in single])


def test_bad_init_from_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        train_run(_cfg(**{"train.init_from": str(tmp_path)}), tmp_path / "r")


def read_records_of(train, cfg, out):
    train(cfg, out)
    return read_records(out / "metrics.jsonl")


def test_a_too_short_run_says_its_label_is_unreliable(tmp_path):
    short = train_run(_cfg(**{"train.epochs": 2, "train.records": 3}), tmp_path / "short")
    assert "too short" in short["regime_note"]
    long = train_run(_cfg(**{"train.epochs": 6, "train.records": 6}), tmp_path / "long")
    assert long["regime_note"] == ""


def _cut(run_dir, checkpoints=2):
    """A kill after some records: the last checkpoints and the summary are lost."""
    for path in sorted((run_dir / "checkpoints").glob("step_*.pt"))[-checkpoints:]:
        path.unlink()
    (run_dir / "summary.json").unlink()


def test_a_pack_resumes_exactly_after_one_member_finished_nonfinite(tmp_path):
    from spherelab.train import train_ensemble

    over = {"train.epochs": 6, "train.records": 6, "optim.momentum": 0.5, "train.dtype": "float64"}
    cfgs = [_cfg(**over | {"optim.elr": e}) for e in (1e300, 1e-2)]
    full = train_ensemble(cfgs, [tmp_path / "f0", tmp_path / "f1"])
    cut = [tmp_path / "c0", tmp_path / "c1"]
    train_ensemble(cfgs, cut)
    _cut(cut[1])  # the survivor was cut; the non-finite member had finished
    resumed = train_ensemble(cfgs, cut)
    assert full[0]["status"] == resumed[0]["status"] == "nonfinite"
    assert read_records(cut[1] / "metrics.jsonl") == read_records(tmp_path / "f1" / "metrics.jsonl")
    assert resumed[1]["train_loss"] == full[1]["train_loss"]


def test_a_run_killed_before_its_nonfinite_summary_is_finished_on_resume(tmp_path):
    cfg = _cfg(**{"optim.elr": 1e300, "train.dtype": "float64"})
    full = train_run(cfg, tmp_path / "full")
    train_run(cfg, tmp_path / "cut")
    (tmp_path / "cut" / "summary.json").unlink()
    resumed = train_run(cfg, tmp_path / "cut")
    assert resumed["status"] == full["status"] == "nonfinite"
    assert resumed["step"] == full["step"]
    assert read_records(tmp_path / "cut" / "metrics.jsonl") == read_records(
        tmp_path / "full" / "metrics.jsonl"
    )


def test_resuming_keeps_the_online_diagnostics_of_the_unbroken_run(tmp_path):
    from spherelab.diagnose import hooks_for

    cfg = _cfg(**{"train.diagnose": "grad", "train.epochs": 6, "train.records": 6})
    train_run(cfg, tmp_path / "full", hooks=hooks_for(cfg))
    train_run(cfg, tmp_path / "cut", hooks=hooks_for(cfg))
    _cut(tmp_path / "cut")
    train_run(cfg, tmp_path / "cut", hooks=hooks_for(cfg))
    steps = [
        [r["step"] for r in read_records(tmp_path / d / "diagnostics.jsonl")]
        for d in ("full", "cut")
    ]
    assert (
        steps[0]
        == steps[1]
        == [r["step"] for r in read_records(tmp_path / "full" / "metrics.jsonl")]
    )


def test_packed_members_save_only_their_own_tensors(tmp_path):
    from spherelab.train import train_ensemble

    cfgs = [_cfg(**{"optim.elr": e}) for e in (1e-3, 1e-2, 3e-2)]
    train_ensemble(cfgs, [tmp_path / str(k) for k in range(3)])
    train_run(cfgs[0], tmp_path / "single")
    for run in ("1", "single"):
        files = sorted((tmp_path / run / "checkpoints").glob("*.pt"))
        for path in files:
            state = torch.load(path, weights_only=True)
            for t in state.get("init", []) + state.get("prev", []):
                assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), path.name
    sizes = [(tmp_path / r / "checkpoints" / "init.pt").stat().st_size for r in ("0", "single")]
    assert sizes[0] == sizes[1]


def test_a_packed_members_checkpoint_holds_the_scheduled_rate_of_its_single_run(tmp_path):
    from spherelab.train import train_ensemble

    over = {
        "optim.schedule": "piecewise",
        "optim.schedule_milestones": [1.0],
        "optim.schedule_factors": [0.1],
    }
    cfgs = [_cfg(**over | {"optim.elr": e}) for e in (1e-2, 2e-2)]
    train_ensemble(cfgs, [tmp_path / "a", tmp_path / "b"])
    train_run(cfgs[1], tmp_path / "single")
    last = [sorted((tmp_path / r / "checkpoints").glob("step_*.pt"))[-1] for r in ("b", "single")]
    groups = [torch.load(p, weights_only=True)["optimizer"]["param_groups"][0] for p in last]
    assert groups[0]["elr"] == pytest.approx(groups[1]["elr"]) == pytest.approx(2e-3)


def test_cuda_graph_without_cuda_is_refused_before_anything_is_written(tmp_path):
    from spherelab.train import train_ensemble

    with pytest.raises(ValueError, match="cuda_graph needs train.device=cuda"):
        train_ensemble([_cfg()], [tmp_path / "r"], cuda_graph=True)
    assert not (tmp_path / "r").exists()


def test_a_ghost_batch_step_is_one_step_over_chunks_with_their_own_batchnorm():
    from spherelab.sphere import SphereSGD
    from spherelab.train.step import eager_step, ghost_step

    def net_and_step(ghost: int | None):
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Linear(5, 6, bias=False),
            torch.nn.BatchNorm1d(6, affine=False),
            torch.nn.Linear(6, 3),
        ).double()
        opt = SphereSGD([{"params": [net[0].weight]}], elr=0.1)
        if ghost is None:
            return net, eager_step(net, opt, "cross_entropy", packed=False)
        return net, ghost_step(net, opt, "cross_entropy", ghost)

    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 3, (12,))
    (one, step_one), (whole, step_whole) = net_and_step(None), net_and_step(12)
    torch.testing.assert_close(step_whole(x, y), step_one(x, y), rtol=1e-14, atol=0)
    torch.testing.assert_close(whole[0].weight, one[0].weight, rtol=0, atol=1e-14)
    (ghost, step_ghost), (chunks, _) = net_and_step(4), net_and_step(None)
    loss = step_ghost(x, y)
    with torch.no_grad():  # the loss is the mean of the chunk losses, each with its own BN
        parts = [
            torch.nn.functional.cross_entropy(chunks(x[i : i + 4]), y[i : i + 4]) for i in (0, 4, 8)
        ]
    torch.testing.assert_close(loss, torch.stack(parts).mean().reshape(1), rtol=1e-14, atol=0)
    assert (ghost[0].weight - one[0].weight).abs().max() > 1e-6


def test_a_full_batch_run_with_ghost_batches_resumes_bitwise(tmp_path):
    cfg = _cfg(**{"data.batch_size": 0, "train.ghost_batch": 64, "train.epochs": 6,
                  "train.records": 6})  # fmt: skip
    full = train_run(cfg, tmp_path / "full")
    run = tmp_path / "cut"
    train_run(cfg, run)
    for path in sorted((run / "checkpoints").glob("step_*.pt"))[-2:]:
        path.unlink()
    (run / "summary.json").unlink()
    assert train_run(cfg, run, resume=True)["train_loss"] == full["train_loss"]
    plain = train_run(_cfg(**{"data.batch_size": 0, "train.epochs": 6}), tmp_path / "plain")
    assert plain["train_loss"] != full["train_loss"]


def test_a_run_with_the_papers_options_records_the_papers_rates(tmp_path):
    over = {
        "optim.sphere": "per_filter",
        "optim.elr_unit": "paper",
        "optim.momentum": 0.9,
        "optim.momentum_style": "paper",
        "optim.schedule": "linear_decay",
        "optim.schedule_factors": [0.1],
        "train.loss": "mse_class_mean",
        "train.dtype": "float64",
    }
    summary = train_run(_cfg(**over), tmp_path / "run")
    assert summary["status"] == "finished"
    rows = read_records(tmp_path / "run" / "metrics.jsonl")
    assert rows[0]["elr"] == 1e-2 and rows[-1]["elr"] < 1e-2  # the paper's unit, decayed
    ckpt = torch.load(
        sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))[-1], weights_only=True
    )
    radii = torch.cat([s["filter_radius"].reshape(-1) for s in ckpt["optimizer"]["state"].values()])
    torch.testing.assert_close(radii, radii[:1].expand_as(radii))  # all at the RMS filter norm
    n_filters = radii.numel()
    assert rows[-1]["lr"] == pytest.approx(rows[-1]["elr"] * n_filters * radii[0].item() ** 2)


def test_noisy_runs_record_both_subsets_and_every_run_its_l2_distance_to_init(tmp_path):
    from spherelab.train.build import build_run

    cfg = _cfg(
        **{
            "data.label_noise": 0.3,
            "data.label_noise_style": "paper",
            "train.dtype": "float64",
            "train.eval_batch_size": 64,  # 256 = 4 x 64: plain and weighted means agree
        }
    )
    train_run(cfg, tmp_path / "run")
    rows = read_records(tmp_path / "run" / "metrics.jsonl")
    noisy = build_run(cfg).data.noisy
    share = float(noisy.double().mean())
    for row in rows:
        mixed = share * row["train_loss_noisy"] + (1 - share) * row["train_loss_clean"]
        assert 0 < mixed < 10 and 0 <= row["train_acc_noisy"] <= 1
        assert row["eff_grad_norm_plain"] == pytest.approx(row["eff_grad_norm"], rel=1e-12)
    assert rows[0]["l2_to_init"] == 0.0
    init = torch.load(tmp_path / "run" / "checkpoints" / "init.pt")["init"]
    last = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))[-1]
    model = torch.load(last)["model"]
    names = build_run(cfg).si_names  # only the SI weights move (the head is frozen)
    moved = sum(float((model[n] - w).square().sum()) for n, w in zip(names, init))
    assert rows[-1]["l2_to_init"] == pytest.approx(moved**0.5, rel=1e-12)


class _StopAt:
    """A stop request (a preempted job) at the end of epoch `epoch`: once."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.asked = epoch, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked == self.epoch


@pytest.mark.parametrize("policy", ["log", "last"])
def test_a_stopped_pack_checkpoints_between_records_and_resumes_bitwise(tmp_path, policy):
    from spherelab.train import train_ensemble
    from spherelab.train.loop import Interrupted

    over = {"train.epochs": 6, "train.records": 3, "optim.momentum": 0.5}
    cfgs = [_cfg(**over | {"optim.elr": e, "train.checkpoints": policy}) for e in (1e-2, 5e-2)]
    full, cut = [tmp_path / "f0", tmp_path / "f1"], [tmp_path / "c0", tmp_path / "c1"]
    train_ensemble(cfgs, full)
    with pytest.raises(Interrupted) as stopped:
        train_ensemble(cfgs, cut, stop=_StopAt(epoch=4))
    assert stopped.value.step == 4 * 8  # not a record step (records: epochs 0, 2 and 6)
    assert all((c / "checkpoints" / "step_000000032.pt").exists() for c in cut)
    assert not any((c / "summary.json").exists() for c in cut)
    train_ensemble(cfgs, cut)
    for f, c in zip(full, cut):
        assert (c / "metrics.jsonl").read_bytes() == (f / "metrics.jsonl").read_bytes()
        assert (c / "summary.json").read_bytes() == (f / "summary.json").read_bytes()
        names = sorted(p.name for p in (f / "checkpoints").iterdir())
        assert sorted(p.name for p in (c / "checkpoints").iterdir()) == names  # stop's dropped
