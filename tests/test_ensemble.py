"""The ensemble engine: member k of one packed module equals the single run with its config."""

import json

import pytest
import torch

from spherelab.config import Config, apply_overrides
from spherelab.data.load import load_dataset
from spherelab.ensemble.members import member_inputs
from spherelab.ensemble.modules import MemberNorm1d, batched_names, ensemble_skeleton
from spherelab.ensemble.pack import can_pack, pack_key, pack_states
from spherelab.io import read_jsonl as read_records
from spherelab.models import build_from_config
from spherelab.sphere.check import si_parameters
from spherelab.sphere.optim import SphereSGD
from spherelab.train import train_ensemble, train_run
from spherelab.train.checkpoints import list_checkpoints
from spherelab.train.optimizer import make_optimizer
from spherelab.train.step import eager_step

FAMILIES = {
    "mlp_si": {"model.width": 8, "model.depth": 2, "data.name": "synthetic:12:64:32"},
    "convnet_si": {"model.width": 3, "model.depth": 2, "data.name": "synthetic:2x8x8:64:32"},
    "resnet18_si": {"model.width": 2, "data.name": "synthetic:2x8x8:48:16"},
}
ELRS = (2e-3, 5e-3, 1e-3)
# ELRs in the convergence regime of each tiny model (chaotic runs amplify rounding). The tiny
# convnet at 5e-3 already amplifies a rounding difference ~1e3-fold per 100 steps (3.9e-7 after
# 200 steps, measured); at 1e-3 / 2e-3 members stay within 1e-10 of their single runs.
CONVERGENT = {"mlp_si": (2e-3, 5e-3), "convnet_si": (1e-3, 2e-3), "resnet18_si": (1e-4, 3e-4)}


def _cfg(family: str = "mlp_si", **over) -> Config:
    base = {
        "model.name": family,
        "data.batch_size": 16,
        "train.steps": 12,
        "train.records": 4,
        "optim.elr": 2e-3,
        "train.device": "cpu",
        "train.dtype": "float64",
        "train.eval_batch_size": 32,
    }
    return apply_overrides(Config(), base | FAMILIES[family] | over)


def _members(cfgs):
    """The single models of the configs, seeded as the single-run engine seeds them."""
    data = load_dataset(cfgs[0].data.name, dtype=torch.float64)
    models = []
    for cfg in cfgs:
        torch.manual_seed(cfg.train.seed)
        models.append(build_from_config(cfg.model, data.input_shape, data.num_classes).double())
    return data, models


@pytest.mark.parametrize(
    "family, layout", [(f, None) for f in sorted(FAMILIES)] + [("mlp_si", "channels")]
)
def test_one_ensemble_step_equals_each_single_step(family, layout):
    cfgs = [_cfg(family, **{"optim.elr": e, "train.seed": s}) for s, e in enumerate(ELRS)]
    data, singles = _members(cfgs)
    ens = ensemble_skeleton(singles[0], len(cfgs), layout).double()
    pack_states(ens, [m.state_dict() for m in singles], batched_names(ens))
    names = {id(p): n for n, p in singles[0].named_parameters()}
    si_names = [names[id(p)] for p in si_parameters(singles[0])]
    packed = dict(ens.named_parameters())
    opts = [make_optimizer(c.optim, m, si_parameters(m)) for c, m in zip(cfgs, singles)]
    opt = SphereSGD(
        [packed[n] for n in si_names],
        elr=list(ELRS),
        members=len(cfgs),
        radius=[o.param_groups[0]["radius"] for o in opts],
    )
    index = torch.stack([torch.arange(16) + 16 * k for k in range(len(cfgs))])
    x = member_inputs(data.x_train[index], ens.member_layout)
    eager_step(ens, opt, "cross_entropy")(x, data.y_train[index])
    for k, (model, o) in enumerate(zip(singles, opts)):
        eager_step(model, o, "cross_entropy", packed=False)(
            data.x_train[index[k]], data.y_train[index[k]]
        )
        for name in si_names:
            got = packed[name].reshape(len(cfgs), -1)[k]
            assert (got - model.get_parameter(name).reshape(-1)).abs().max() < 1e-12, name


@pytest.mark.parametrize("momentum", [0.3, 0.0, None])  # None: a cumulative average
def test_member_norm_is_one_batchnorm_per_member_in_train_and_eval_mode(momentum):
    torch.manual_seed(0)
    k, f, b = 3, 5, 16
    packed = MemberNorm1d(k * f, momentum=momentum, affine=False).double()
    singles = [torch.nn.BatchNorm1d(f, momentum=momentum, affine=False).double() for _ in range(k)]
    for _ in range(3):  # running statistics follow BatchNorm's update
        x = torch.randn(k, f, b, dtype=torch.float64) * 2 + 1
        got = packed(x)
        for m, single in enumerate(singles):
            torch.testing.assert_close(got[m], single(x[m].T).T, rtol=0, atol=1e-12)
    state = packed.state_dict()
    for key in ("running_mean", "running_var"):
        want = torch.cat([single.state_dict()[key] for single in singles])
        torch.testing.assert_close(state[key], want, rtol=0, atol=1e-12)
    assert int(state["num_batches_tracked"]) == 3
    packed.eval()
    x = torch.randn(k, f, b, dtype=torch.float64)
    got = packed(x)
    for m, single in enumerate(singles):
        torch.testing.assert_close(got[m], single.eval()(x[m].T).T, rtol=0, atol=1e-12)


def test_member_norm_refuses_a_batch_of_one_as_batchnorm_does():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm1d(3, affine=False)(torch.randn(1, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        MemberNorm1d(2 * 3, affine=False)(torch.randn(2, 3, 1))


@pytest.mark.parametrize("k", [1, 3])
def test_the_ensemble_step_never_reads_the_device(k):
    """The whole step on the meta device, where any read back to the host raises."""
    cfg = _cfg(**{"data.name": "synthetic:1x6x6:64:32"})
    _, (single,) = _members([cfg])
    ens = ensemble_skeleton(single, k).to("meta")
    names = {id(p): n for n, p in single.named_parameters()}
    packed = dict(ens.named_parameters())
    si = [packed[names[id(p)]] for p in si_parameters(single)]
    opt = SphereSGD(si, elr=[1e-3] * k, members=k, radius=[1.0] * k, momentum=0.9)
    device_tensor = torch.full((k,), 1e-3, device="meta")  # as build_ensemble stores them
    opt.param_groups[0].update(elr=device_tensor, radius=torch.ones(k, device="meta"))
    x = member_inputs(torch.empty(k, 16, 1, 6, 6, device="meta"), ens.member_layout)
    y = torch.empty(k, 16, dtype=torch.long, device="meta")
    step = eager_step(ens, opt, "cross_entropy")
    step(x, y)
    step(x, y)  # the second step also uses the momentum buffers


def test_cuda_graph_replays_exactly_the_full_batches_in_both_layouts(tmp_path, monkeypatch):
    from spherelab.train import engine, loop

    calls = []

    def recording_graph(model, opt, loss, x, y):  # stands in for the CUDA graph (no GPU here)
        step = eager_step(model, opt, loss)

        def replay(xb, yb):
            calls.append(tuple(xb.shape) == tuple(x.shape))
            return step(xb, yb)

        return replay

    monkeypatch.setattr(loop, "cuda_graph_step", recording_graph)
    monkeypatch.setattr(engine, "resolve_device", lambda name: torch.device("cuda"))  # the check
    # 40 samples in batches of 16: two full batches and a short one per epoch; K = B = 16
    # members is the case where the members' count could pass for the batch size
    over = {"data.name": "synthetic:12:40:32", "train.steps": 6, "train.records": 2}
    for k in (2, 16):
        calls.clear()
        cfgs = [_cfg(**over | {"optim.elr": 1e-3, "train.seed": s}) for s in range(k)]
        train_ensemble(cfgs, [tmp_path / f"k{k}" / str(i) for i in range(k)], cuda_graph=True)
        assert calls == [True] * 4, k  # 4 full batches replayed, the 2 short ones eager


def test_a_convnet_cannot_take_the_features_layout():
    cfg = _cfg("convnet_si")
    _, (model,) = _members([cfg])
    assert ensemble_skeleton(model, 2).member_layout == "channels"
    with pytest.raises(ValueError, match="convolutions need 'channels'"):
        ensemble_skeleton(model, 2, "features")


def _final_model(run_dir):
    return torch.load(list_checkpoints(run_dir)[-1], weights_only=True)["model"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_members_follow_their_single_runs_for_200_steps(family, tmp_path):
    over = {"train.steps": 200, "train.records": 3, "train.checkpoints": "last"}
    cfgs = [
        _cfg(family, **over | {"optim.elr": e, "train.seed": s})
        for s, e in enumerate(CONVERGENT[family])
    ]
    train_ensemble(cfgs, [tmp_path / f"e{k}" for k in range(2)])
    for k, cfg in enumerate(cfgs):
        train_run(cfg, tmp_path / f"s{k}")
        ens, single = _final_model(tmp_path / f"e{k}"), _final_model(tmp_path / f"s{k}")
        assert ens.keys() == single.keys()
        for key in single:
            assert (ens[key].double() - single[key].double()).abs().max() < 1e-6, key


def test_members_follow_their_single_runs_under_a_cosine_schedule(tmp_path):
    over = {"train.steps": 40, "optim.schedule": "cosine", "train.checkpoints": "last"}
    cfgs = [_cfg(**over | {"optim.elr": e, "train.seed": s}) for s, e in enumerate(ELRS[:2])]
    train_ensemble(cfgs, [tmp_path / f"e{k}" for k in range(2)])
    for k, cfg in enumerate(cfgs):
        train_run(cfg, tmp_path / f"s{k}")
        ens, single = _final_model(tmp_path / f"e{k}"), _final_model(tmp_path / f"s{k}")
        for key in single:
            assert (ens[key] - single[key]).abs().max() < 1e-9, key
        rows = read_records(tmp_path / f"e{k}" / "metrics.jsonl")
        assert rows[-1]["elr"] == pytest.approx(
            read_records(tmp_path / f"s{k}" / "metrics.jsonl")[-1]["elr"], rel=1e-12
        )


def test_member_files_have_the_single_run_keys_and_record_steps(tmp_path):
    noise = {"data.label_noise": 0.25, "data.label_noise_style": "paper"}  # seed-free: packable
    cfgs = [_cfg(**{"optim.elr": e, "train.seed": s}, **noise) for s, e in enumerate(ELRS[:2])]
    summaries = train_ensemble(cfgs, [tmp_path / "e0", tmp_path / "e1"])
    single = train_run(cfgs[1], tmp_path / "s1")
    mine, ref = (
        read_records(tmp_path / "e1" / "metrics.jsonl"),
        read_records(tmp_path / "s1" / "metrics.jsonl"),
    )
    assert [r["step"] for r in mine] == [r["step"] for r in ref]
    assert [set(r) for r in mine] == [set(r) for r in ref]
    assert set(summaries[1]) == set(single)
    keys = ("train_loss", "test_acc", "eff_grad_norm", "angle", "si_norm", "grad_snr")
    new = ("eff_grad_norm_plain", "l2_to_init", "train_loss_noisy", "train_acc_clean")
    for key in keys + new:
        assert summaries[1][key] == pytest.approx(single[key], rel=1e-9, abs=1e-12), key
    saved = json.loads((tmp_path / "e1" / "config.json").read_text())
    assert saved["optim"]["elr"] == ELRS[1] and "environment" in saved
    assert sorted(p.name for p in (tmp_path / "e1" / "checkpoints").iterdir()) == sorted(
        p.name for p in (tmp_path / "s1" / "checkpoints").iterdir()
    )


def test_a_nonfinite_member_is_frozen_and_the_others_go_on(tmp_path):
    cfgs = [_cfg(**{"optim.elr": 1e300, "train.seed": 0}), _cfg(**{"train.seed": 1})]
    bad, good = train_ensemble(cfgs, [tmp_path / "bad", tmp_path / "good"])
    assert bad["status"] == "nonfinite" and bad["regime"] == "divergence"
    assert bad["step"] < cfgs[0].train.steps
    single_good = train_run(cfgs[1], tmp_path / "single")
    assert good["status"] == "finished" and good["step"] == cfgs[1].train.steps
    assert good["train_loss"] == pytest.approx(single_good["train_loss"], rel=1e-9)


def test_a_divergent_member_gets_the_regime_of_its_single_run(tmp_path):
    over = {"train.steps": 48, "train.records": 6}
    cfgs = [
        _cfg(**over | {"optim.elr": 3.0, "train.seed": 0}),
        _cfg(**over | {"optim.elr": 1e-2, "train.seed": 1}),
    ]
    summaries = train_ensemble(cfgs, [tmp_path / "e0", tmp_path / "e1"])
    for k, cfg in enumerate(cfgs):
        assert summaries[k]["regime"] == train_run(cfg, tmp_path / f"s{k}")["regime"]


def test_an_interrupted_ensemble_resumes_to_the_unbroken_result(tmp_path):
    over = {"train.steps": 24, "train.records": 6, "optim.momentum": 0.5}
    cfgs = [_cfg(**over | {"optim.elr": e, "train.seed": s}) for s, e in enumerate(ELRS[:2])]
    full = train_ensemble(cfgs, [tmp_path / "f0", tmp_path / "f1"])
    cut = [tmp_path / "c0", tmp_path / "c1"]
    train_ensemble(cfgs, cut)
    for run in cut:  # a kill after a few records: the last checkpoints and summary are lost
        for path in list_checkpoints(run)[-2:]:
            path.unlink()
        (run / "summary.json").unlink()
    resumed = train_ensemble(cfgs, cut)
    for k in range(2):
        assert resumed[k]["train_loss"] == full[k]["train_loss"]
        assert read_records(cut[k] / "metrics.jsonl") == read_records(
            tmp_path / f"f{k}" / "metrics.jsonl"
        )


def test_a_member_checkpoint_resumes_as_a_single_run(tmp_path):
    over = {"train.steps": 24, "train.records": 6}
    cfgs = [_cfg(**over | {"optim.elr": e, "train.seed": s}) for s, e in enumerate(ELRS[:2])]
    summaries = train_ensemble(cfgs, [tmp_path / "e0", tmp_path / "e1"])
    run = tmp_path / "e1"
    for path in list_checkpoints(run)[-2:]:
        path.unlink()
    (run / "summary.json").unlink()
    resumed = train_run(cfgs[1], run)
    assert resumed["train_loss"] == pytest.approx(summaries[1]["train_loss"], rel=1e-12)


def test_shared_batches_keep_member_zero_on_its_single_run(tmp_path):
    cfgs = [_cfg(**{"optim.elr": e, "train.seed": s}) for s, e in enumerate(ELRS[:2])]
    shared = train_ensemble(cfgs, [tmp_path / "e0", tmp_path / "e1"], shared_batches=True)
    assert shared[0]["train_loss"] == pytest.approx(
        train_run(cfgs[0], tmp_path / "s0")["train_loss"], rel=1e-9
    )
    assert shared[1]["train_loss"] != pytest.approx(
        train_run(cfgs[1], tmp_path / "s1")["train_loss"], rel=1e-9
    )


def test_members_follow_their_single_runs_with_the_papers_momentum_and_weight_decay(tmp_path):
    over = {
        "train.steps": 30,
        "train.checkpoints": "last",
        "optim.momentum": 0.9,
        "optim.momentum_style": "paper",
        "optim.sphere_weight_decay": 0.05,
    }
    cfgs = [_cfg(**over | {"optim.elr": e, "train.seed": s}) for s, e in enumerate(ELRS[:2])]
    train_ensemble(cfgs, [tmp_path / f"e{k}" for k in range(2)])
    for k, cfg in enumerate(cfgs):
        train_run(cfg, tmp_path / f"s{k}")
        ens, single = _final_model(tmp_path / f"e{k}"), _final_model(tmp_path / f"s{k}")
        for key in single:
            assert (ens[key] - single[key]).abs().max() < 1e-9, key
    tangent = tmp_path / "tangent"
    train_run(cfgs[0].with_overrides({"optim.momentum_style": "tangent"}), tangent)
    single, other = _final_model(tmp_path / "s0"), _final_model(tangent)
    assert max((single[key] - other[key]).abs().max() for key in single) > 1e-6


def test_pack_key_ignores_only_elr_and_seed():
    base = _cfg()
    assert pack_key(base) == pack_key(_cfg(**{"optim.elr": 0.5, "train.seed": 3}))
    assert pack_key(base) != pack_key(_cfg(**{"data.batch_size": 8}))
    noisy = _cfg(**{"data.label_noise": 0.1})
    assert pack_key(noisy) != pack_key(_cfg(**{"data.label_noise": 0.1, "train.seed": 1}))


def test_pack_key_drops_the_seed_when_the_data_do_not_depend_on_it():
    paper = {"data.label_noise": 0.1, "data.label_noise_style": "paper"}
    assert pack_key(_cfg(**paper)) == pack_key(_cfg(**paper, **{"train.seed": 1}))
    first = {"data.train_subset": 50, "data.subset": "first"}
    assert pack_key(_cfg(**first)) == pack_key(_cfg(**first, **{"train.seed": 1}))
    seeded = {"data.train_subset": 50}
    assert pack_key(_cfg(**seeded)) != pack_key(_cfg(**seeded, **{"train.seed": 1}))


def test_can_pack_refuses_other_kinds_and_mixed_configs():
    assert can_pack([_cfg(), _cfg(**{"optim.elr": 0.1, "train.seed": 2})])
    assert not can_pack([_cfg(), _cfg(**{"model.width": 4})])
    assert not can_pack([_cfg(**{"optim.sphere": "per_tensor"})])
    assert not can_pack([_cfg(**{"model.name": "mlp_af"})])
    assert not can_pack([_cfg(**{"train.ghost_batch": 16})])  # it splits one run's batch
    assert not can_pack([])


def test_train_ensemble_names_the_fix_for_unpackable_configs(tmp_path):
    with pytest.raises(ValueError, match="pack_key"):
        train_ensemble([_cfg(), _cfg(**{"model.width": 4})], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="one directory per config"):
        train_ensemble([_cfg()], [tmp_path / "a", tmp_path / "b"])


@pytest.mark.slow
def test_a_compiled_ensemble_equals_the_eager_one(tmp_path):
    cfgs = [_cfg(**{"optim.elr": e, "train.seed": s}) for s, e in enumerate(ELRS[:2])]
    eager = train_ensemble(cfgs, [tmp_path / "e0", tmp_path / "e1"])
    compiled_cfgs = [c.with_overrides({"train.compile": True}) for c in cfgs]
    compiled = train_ensemble(compiled_cfgs, [tmp_path / "c0", tmp_path / "c1"])
    single = train_run(compiled_cfgs[0], tmp_path / "s0")
    for k in range(2):
        assert compiled[k]["train_loss"] == pytest.approx(eager[k]["train_loss"], rel=1e-9)
    assert single["train_loss"] == pytest.approx(eager[0]["train_loss"], rel=1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cuda_graph_ensemble_equals_eager_and_single_runs_on_cuda(family, tmp_path):
    over = {"train.device": "cuda", "train.steps": 40}
    cfgs = [  # convergence-regime ELRs: chaotic runs amplify rounding (see CONVERGENT)
        _cfg(family, **over | {"optim.elr": e, "train.seed": s})
        for s, e in enumerate(CONVERGENT[family])
    ]
    eager = train_ensemble(cfgs, [tmp_path / "e0", tmp_path / "e1"])
    graph = train_ensemble(cfgs, [tmp_path / "g0", tmp_path / "g1"], cuda_graph=True)
    for k, cfg in enumerate(cfgs):
        single = train_run(cfg, tmp_path / f"s{k}")
        for key in ("train_loss", "si_norm", "angle_to_init"):
            # cuDNN may pick other algorithms under capture: 2e-9 apart on an H200 (resnet18_si)
            assert graph[k][key] == pytest.approx(eager[k][key], rel=1e-7, abs=1e-12), key
            assert eager[k][key] == pytest.approx(single[key], rel=1e-6, abs=1e-9), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("members, cuda_graph", [(3, False), (3, True), (1, False)])
def test_training_steps_never_wait_for_the_device(members, cuda_graph, tmp_path):
    from spherelab.train.build import build_pack
    from spherelab.train.loop import Stepper, next_batch

    cfgs = [
        _cfg(
            "convnet_si",
            **{"train.device": "cuda", "optim.elr": e, "train.seed": s, "data.batch_size": 8},
        )
        for s, e in enumerate(ELRS[:members])
    ]
    pack = build_pack(cfgs, [tmp_path / str(k) for k in range(members)])  # 1: a single run
    stepper = Stepper(pack, cuda_graph)
    x_all, y_all = pack.share.train_inputs(pack.data.x_train), pack.data.y_train
    stepper(*next_batch(pack, x_all, y_all))  # warm-up (and capture)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):  # within the first epoch: no new permutation is drawn
            stepper(*next_batch(pack, x_all, y_all))
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_can_pack_refuses_a_head_with_bias_so_it_runs_alone():
    assert not can_pack([_cfg(**{"model.head_bias": True})])
    assert can_pack([_cfg(**{"model.head_bias": False})])
