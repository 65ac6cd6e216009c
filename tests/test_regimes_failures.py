"""The classifier's known failure modes (a)-(d), the `undetermined` label, the Lyapunov vote and
the paper's Figure-1 behaviour, each on synthetic records as the engine writes them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _regime_shapes import (
    CLASSES,
    INIT_GRAD,
    INIT_LOSS,
    converging,
    diverging,
    equilibrium,
    log_epochs,
    rows,
)

from spherelab.regimes import (
    LABELS,
    NO_REGIME,
    UNDETERMINED,
    classify,
    label_run,
    majority_regime,
    sweep_boundaries,
    sweep_labels,
)
from spherelab.studies.finetune import analyse
from spherelab.studies.lens import Stretch
from spherelab.train.origin import origin_init
from spherelab.train.run_files import relabelled_summary

# The paper's Figure 1 (docs/science.md#figure-1-values), read off the plot: ELR -> (regime,
# train loss at epoch 1000, mean effective gradient norm).
FIGURE1 = {
    1e-5: ("convergence", 7e-3, 7.5),
    1e-4: ("convergence", 9e-4, 0.85),
    5e-4: ("convergence", 2e-4, 0.2),
    1e-3: ("chaotic_equilibrium", 0.5, 55.0),
    2e-3: ("chaotic_equilibrium", 0.9, 36.0),
    5e-3: ("chaotic_equilibrium", 1.6, 24.0),
    5e-2: ("divergence", 10.0, 1.3e4),
    1e-1: ("divergence", 12.0, 3.7e4),
}
SHAPES = {"convergence": converging, "chaotic_equilibrium": equilibrium, "divergence": diverging}


def figure1_run(elr: float, seed: int, last: float = 1000) -> list[dict[str, float]]:
    regime, level, grad = FIGURE1[elr]
    ep = log_epochs(last)
    loss, g = SHAPES[regime](ep, level, grad, np.random.default_rng(seed))
    return rows(ep, loss, g, elr=elr)


def label(records, **kw) -> str:
    return label_run(records, "finished", CLASSES, **kw)[0]


def test_undetermined_is_a_label_that_names_no_regime():
    assert UNDETERMINED in NO_REGIME and UNDETERMINED in LABELS


def test_figure1_is_labelled_three_convergence_three_equilibrium_two_divergence():
    for seed in range(5):
        labels = [label(figure1_run(elr, seed)) for elr in sorted(FIGURE1)]
        assert labels == [FIGURE1[e][0] for e in sorted(FIGURE1)], seed
    assert [r for r, _, _ in FIGURE1.values()].count("chaotic_equilibrium") == 3


def test_figure1_truncated_runs_are_right_or_undetermined():
    for last in (30, 60, 100, 200):
        for elr in FIGURE1:
            for seed in range(3):
                got = label([r for r in figure1_run(elr, seed) if r["epoch"] <= last])
                assert got in (FIGURE1[elr][0], UNDETERMINED), (last, elr, seed, got)


# -- (a) a fine-tune branch judged against its own start --------------------------------


def branch_into_regime2(seed: int = 0) -> list[dict[str, float]]:
    """A branch from a converged checkpoint (loss 0.01) at a regime-2 ELR: its loss climbs
    to a noisy stationary 0.6 within a few epochs, its gradient norm from 0.5 to ~15."""
    rng = np.random.default_rng(seed)
    ep = log_epochs(100, 20)
    rise = 1 - np.exp(-ep / 2.0)
    loss = (0.01 + 0.59 * rise) * rng.lognormal(0, 0.2, ep.size)
    grad = (0.5 + 14.5 * rise) * rng.lognormal(0, 0.2, ep.size)
    return rows(ep, loss, grad, elr=5e-3, acc=np.clip(1 - 0.3 * rise, 0, 1))


SCRATCH_INIT = {"epoch": 0.0, "step": 0, "train_loss": INIT_LOSS, "eff_grad_norm": INIT_GRAD}


def test_a_branch_into_regime2_is_judged_against_its_scratch_runs_init():
    records = branch_into_regime2()
    assert label(records, init=SCRATCH_INIT) == "chaotic_equilibrium"
    # with no origin found, only the votes that need no init reference vote
    assert label(records, init={}) == "chaotic_equilibrium"


def _write_run(run, config, records, summary=None):
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    last = {**records[-1], "status": "finished", "regime": "", "num_classes": CLASSES}
    (run / "summary.json").write_text(json.dumps(last | (summary or {})))


def test_relabel_finds_a_branchs_scratch_run_through_init_from(tmp_path):
    scratch = tmp_path / "runs" / "pretrain" / "elr_1e-04"
    _write_run(scratch, {"train": {"init_from": None}}, figure1_run(1e-4, 0, last=100))
    checkpoint = scratch / "checkpoints" / "step_000039100.pt"
    branch = tmp_path / "runs" / "finetune" / "ft"
    _write_run(branch, {"train": {"init_from": str(checkpoint)}}, branch_into_regime2())
    summary = relabelled_summary(branch)
    assert summary["regime"] == "chaotic_equilibrium", summary["regime_reason"]
    assert summary["regime_origin"] == "found"
    assert summary["regime_stats"]["init_loss"] == INIT_LOSS


def test_a_branch_whose_scratch_run_is_gone_uses_the_votes_that_need_no_init(tmp_path):
    branch = tmp_path / "ft"
    gone = tmp_path / "gone" / "checkpoints" / "step_000000001.pt"
    _write_run(branch, {"train": {"init_from": str(gone)}}, branch_into_regime2())
    summary = relabelled_summary(branch)
    assert summary["regime"] == "chaotic_equilibrium"
    assert summary["regime_origin"] == "lost" and "grad_jump" not in summary["regime_stats"]


# -- (b) a short run still in its transient ------------------------------------------------


def short_regime2(seed: int, last: float = 20) -> list[dict[str, float]]:
    """A regime-2 run stopped at epoch 20, while its loss still falls towards its level."""
    ep = log_epochs(last, 14)
    loss, grad = equilibrium(ep, 0.5, 30.0, np.random.default_rng(seed))
    return rows(ep, loss, grad, elr=2e-3)


def test_a_short_regime2_run_in_its_transient_is_undetermined_not_convergence():
    for seed in range(5):
        regime, stats = label_run(short_regime2(seed), "finished", CLASSES)
        assert regime in (UNDETERMINED, "chaotic_equilibrium"), (seed, stats)
    regime, stats = label_run(short_regime2(0), "finished", CLASSES)
    assert regime == UNDETERMINED and "train longer" in stats["reason"]


# -- (c) loss-only input, regime 2 above ln C ----------------------------------------------


def test_a_regime2_run_above_chance_loss_is_not_divergence():
    ep = log_epochs()
    for seed in range(5):
        loss, grad = equilibrium(ep, 2.4, 20.0, np.random.default_rng(seed))
        assert np.median(loss) > math.log(CLASSES)  # above ln 10 = 2.30; the init is 9.5
        for verdict in (classify(ep, loss, num_classes=CLASSES), classify(ep, loss)):
            assert verdict.regime in ("chaotic_equilibrium", UNDETERMINED), seed
        records = rows(ep, loss, grad, elr=5e-3, acc=np.full(ep.size, 0.4))
        assert label(records) == "chaotic_equilibrium", seed


def test_loss_only_between_chance_and_init_is_undetermined_not_a_guess():
    ep = log_epochs()
    loss, _ = diverging(ep, 0.7 * INIT_LOSS, 1.0, np.random.default_rng(0))
    assert classify(ep, loss, num_classes=CLASSES).regime == UNDETERMINED


# -- (d) regime 1 stalled at the float32 floor ---------------------------------------------


def stalled(level: float, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """A regime-1 run that falls like a power law to `level` by epoch ~60, then stalls there
    (float32 stops resolving its loss or its update), with a relative jitter."""
    ep = log_epochs()
    loss = np.maximum(INIT_LOSS * (1 + ep / 2.0) ** -4.0, level)
    loss *= 1 + jitter * np.random.default_rng(0).standard_normal(ep.size)
    return ep, loss


@pytest.mark.parametrize(("level", "jitter"), [(3e-5, 0.1), (1e-4, 0.0), (3e-3, 2e-4)])
def test_a_regime1_run_stalled_at_the_floor_is_convergence(level, jitter):
    ep, loss = stalled(level, jitter)
    grad = INIT_GRAD * loss / INIT_LOSS
    assert classify(ep, loss, grad, num_classes=CLASSES).regime == "convergence"


# -- the Lyapunov exponent votes where it was measured -------------------------------------


def test_a_reliably_positive_lyapunov_exponent_settles_a_transient_as_regime2():
    records = short_regime2(0)
    assert label(records) == UNDETERMINED
    assert label(records, lyapunov=(0.05, 0.005)) == "chaotic_equilibrium"
    assert label(records, lyapunov=(0.05, 0.04)) == UNDETERMINED  # not reliable


def test_a_lyapunov_exponent_that_contradicts_the_loss_makes_the_label_undetermined():
    r1, r2 = figure1_run(1e-4, 0), figure1_run(2e-3, 0)
    assert label(r1, lyapunov=(0.05, 0.005)) == UNDETERMINED  # falling, yet chaotic
    assert label(r2, lyapunov=(0.0, 1e-4)) == UNDETERMINED  # stationary, yet not chaotic
    assert label(r1, lyapunov=(0.0, 1e-4)) == "convergence"
    assert label(r2, lyapunov=(0.05, 0.005)) == "chaotic_equilibrium"
    for bad in ((math.nan, 0.1), (0.05, 0.0), (0.05, None)):
        assert label(r1, lyapunov=bad) == "convergence"


def test_relabel_passes_the_summarys_lyapunov_exponent(tmp_path):
    run = tmp_path / "run"
    _write_run(run, {"train": {}}, figure1_run(1e-4, 0), {"lyapunov": 0.05, "lyapunov_err": 0.005})
    summary = relabelled_summary(run)
    assert summary["regime"] == UNDETERMINED
    assert (
        summary["regime_stats"]["lyapunov"] == 0.05
        and "reliably positive" in summary["regime_reason"]
    )


def test_every_label_comes_with_a_reason():
    for elr in FIGURE1:
        regime, stats = label_run(figure1_run(elr, 1), "finished", CLASSES)
        assert isinstance(stats["reason"], str) and stats["reason"], (elr, regime)


# -- every consumer takes `undetermined` as a label that names no regime --------------------


def test_undetermined_runs_do_not_vote_on_majorities_or_boundaries():
    rows = [
        {"elr": "0.001", "status": "finished", "regime": "convergence"},
        {"elr": "0.001", "status": "finished", "regime": UNDETERMINED},
        {"elr": "0.001", "status": "finished", "regime": UNDETERMINED},
        {"elr": "0.01", "status": "finished", "regime": UNDETERMINED},
        {"elr": "0.1", "status": "finished", "regime": "divergence"},
    ]
    assert sweep_labels(rows) == {1e-3: "convergence", 0.1: "divergence"}
    assert [(b.lo, b.hi) for b in sweep_boundaries(rows)] == [(1e-3, 0.1)]
    assert majority_regime([UNDETERMINED, "chaotic_equilibrium"]) == "chaotic_equilibrium"
    assert majority_regime([UNDETERMINED]) in NO_REGIME


def test_the_lens_does_not_judge_an_undetermined_stretch():
    stretch = Stretch(1.0, 5.0, "convergence", UNDETERMINED, 3, 1e-3, 1e-3)
    assert stretch.agree is None


def test_fine_tune_analysis_takes_undetermined_scratch_runs_as_no_regime_1_baseline():
    rows = [
        {
            "pretrain_elr": 5e-3,
            "finetune_elr": 1e-4,
            "seed": 0,
            "pretrain_regime": UNDETERMINED,
            "pretrain_test_acc": 0.5,
            "finetune_test_acc": 0.8,
        }
    ]
    scratch = [{"elr": 1e-4, "seed": 0, "regime": UNDETERMINED, "test_acc": 0.7}]
    result = analyse(rows, scratch)
    assert result["best_pretrain_regime"] == ""
    assert not result["scratch_baseline"]["regime1_found"]


def test_a_branch_of_a_branch_is_judged_against_the_first_scratch_run(tmp_path):
    scratch = tmp_path / "scratch"
    _write_run(scratch, {"train": {"init_from": None}}, figure1_run(1e-4, 0, last=100))
    middle = tmp_path / "middle"
    step = "checkpoints/step_000000100.pt"
    _write_run(middle, {"train": {"init_from": str(scratch / step)}}, branch_into_regime2(1))
    assert origin_init(middle / step)["train_loss"] == INIT_LOSS
    assert origin_init(None) is None and origin_init(tmp_path / "nowhere.pt") == {}
    loop = tmp_path / "loop"
    _write_run(loop, {"train": {"init_from": str(loop / step)}}, branch_into_regime2(2))
    assert origin_init(loop / step) == {}
