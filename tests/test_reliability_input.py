"""Regression tests for what a user can feed spherelab (issue 16): every classifier label is
accepted everywhere, relabelling validates before it writes, configs and data are checked up
front, and the determinism switch keeps its promise."""

import io
import json
import shutil

import numpy as np
import pytest
import torch

from spherelab import __version__
from spherelab.cli import main
from spherelab.commands.progress import pack_progress
from spherelab.config import RUN_FILE_KEYS, SECTIONS, Config, ConfigError, from_dict, load_json
from spherelab.data.base import DataError, RawSplits, check_splits
from spherelab.ensemble.pack import can_pack
from spherelab.regimes import (
    LABELS,
    NO_REGIME,
    REGIMES,
    UNCLASSIFIED,
    distinct_records,
    estimate_boundaries,
    majority_regime,
)
from spherelab.report.style import NO_REGIME_COLOR, regime_color, regime_number
from spherelab.runtime import DETERMINISTIC_THREADS, deterministic_mode
from spherelab.sweep.files import read_summary

SMALL = ["--set", "data.train_subset=256", "--set", "model.width=16"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A finished two-ELR sweep of short classified runs (built once, copied per test)."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    argv = ["sweep", "--elrs", "1e-3,1e-1", "--set", "train.steps=20", *SMALL, "--out", str(out)]
    assert main([*argv, "--no-report"]) == 0
    return out


def _copy(sweep_dir, tmp_path):
    return shutil.copytree(sweep_dir, tmp_path / "s")


# -- item 1: every label the classifier can give is accepted everywhere ---------------------


def test_every_label_is_defined_once_and_no_regime_labels_do_not_vote():
    assert set(LABELS) == set(REGIMES) | set(NO_REGIME) and UNCLASSIFIED in NO_REGIME
    assert majority_regime(["convergence", UNCLASSIFIED, UNCLASSIFIED]) == "convergence"
    assert majority_regime([UNCLASSIFIED]) == UNCLASSIFIED
    with pytest.raises(ValueError, match="unknown regime labels"):
        majority_regime(["convergance"])


def test_figures_draw_any_label_that_names_no_regime_in_grey():
    for label in (*NO_REGIME, "undetermined"):
        assert regime_color(label) == NO_REGIME_COLOR and regime_number(label) == "?"
    assert regime_number("chaotic_equilibrium") == "2"


def test_an_elr_whose_runs_name_no_regime_makes_no_boundary():
    bounds = estimate_boundaries([1e-3, 1e-2, 1e-1], ["convergence", UNCLASSIFIED, "divergence"])
    assert [(b.lo, b.hi, b.below, b.above) for b in bounds] == [
        (1e-3, 1e-1, "convergence", "divergence")
    ]


def _one_step_sweep(out, *flags):
    argv = ["sweep", "--elrs", "1e-3,1e-2", "--set", "train.steps=1", *SMALL, *flags]
    assert main([*argv, "--out", str(out)]) == 0


def test_the_report_of_unclassified_runs_says_they_do_not_vote(tmp_path):
    _one_step_sweep(tmp_path / "s", "--no-report")
    assert main(["report", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "boundaries.json").read_text()) == []
    page = (tmp_path / "s" / "report.html").read_text()
    assert "unclassified (2)" in page and "do not vote" in page


def test_a_sweep_of_one_step_runs_writes_its_report_and_report_reruns(tmp_path):
    _one_step_sweep(tmp_path / "s")
    assert (tmp_path / "s" / "report.html").exists()
    assert (tmp_path / "s" / "boundaries.json").exists()
    assert main(["report", str(tmp_path / "s")]) == 0


# -- item 2: report --relabel validates before it writes -------------------------------------


def _duplicate_records(run_dir, change=False):
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines()
    again = [json.dumps({**json.loads(x), "train_loss": 9.0}) for x in lines] if change else lines
    path.write_text("\n".join(lines + again) + "\n")


def test_relabel_drops_records_a_second_writer_repeated(sweep_dir, tmp_path):
    out = _copy(sweep_dir, tmp_path)
    before = (out / "summary.csv").read_text()
    for run in (out / "runs").iterdir():
        _duplicate_records(run)
    assert main(["report", "--relabel", str(out)]) == 0
    assert (out / "summary.csv").read_text() == before
    assert UNCLASSIFIED not in before


def test_relabel_refuses_conflicting_records_and_leaves_every_file_intact(
    sweep_dir, tmp_path, capsys
):
    out = _copy(sweep_dir, tmp_path)
    runs = sorted((out / "runs").iterdir())
    _duplicate_records(runs[-1], change=True)
    files = [out / "summary.csv", *(r / "summary.json" for r in runs)]
    before = [f.read_bytes() for f in files]
    assert main(["report", "--relabel", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "metrics.jsonl" in err and "fresh --out" in err
    assert [f.read_bytes() for f in files] == before


def test_distinct_records_keeps_order_and_drops_exact_repeats():
    rows = [{"step": 0, "x": 1}, {"step": 1, "x": 2}, {"step": 0, "x": 1}]
    assert distinct_records(rows) == rows[:2]


# -- item 4: config files reject unknown tables and keys --------------------------------------


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[optm]\nelr = 0.5\n", "'optm'"),
        ("elr = 0.5\n", "'elr'"),
        ("[optim]\nelr = 0.5\nelrr = 1\n", "optim.elrr"),
    ],
)
def test_a_config_file_with_an_unknown_table_or_key_exits_2(tmp_path, capsys, text, needle):
    (tmp_path / "c.toml").write_text(text)
    argv = ["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "c.toml" in err and len(err.splitlines()) == 1


def test_a_run_directorys_config_json_still_loads(tmp_path):
    argv = ["train", "--set", "train.steps=2", *SMALL, "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert set(saved) - set(SECTIONS) <= set(RUN_FILE_KEYS)
    assert load_json(tmp_path / "r" / "config.json").train.steps == 2
    with pytest.raises(ConfigError, match="'extra'"):
        from_dict({**saved, "extra": 1})


# -- item 5: non-finite features are refused, with the count and the first index --------------


def _npz(tmp_path, x_train):
    y = np.zeros(len(x_train), dtype=np.int64)
    y[1] = 1
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=y, x_test=x_train, y_test=y)
    return f"npz:{tmp_path / 'd.npz'}"


def test_a_nan_feature_in_an_npz_is_refused_with_its_count_and_index(tmp_path, capsys):
    x = np.ones((8, 5), dtype=np.float32)
    x[3, 2], x[6, 0] = np.nan, np.inf
    argv = ["train", "--dataset", _npz(tmp_path, x), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "x_train has 2 non-finite values" in err and "(3, 2)" in err


def test_every_loader_checks_finite_features_in_one_place():
    x = np.zeros((4, 3))
    x[2, 1] = np.nan
    y = np.zeros(4, dtype=np.int64)
    with pytest.raises(DataError, match=r"1 non-finite values .* \(2, 1\)"):
        check_splits(RawSplits(x, y, np.zeros((4, 3)), y, 2), "src")


def test_a_file_that_is_no_zip_gets_our_own_line_not_numpys(tmp_path, capsys):
    (tmp_path / "d.npz").write_text("not a zip")
    argv = ["train", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not a .npz archive" in err and "allow_pickle" not in err


# -- item 8: a last training batch of one sample with BatchNorm is refused up front -----------


@pytest.mark.parametrize(
    "batch, key", [("128", "data.batch_size=128"), ("43", "train.eval_batch_size=128")]
)
def test_a_last_batch_of_one_with_batchnorm_is_refused_before_training(
    tmp_path, capsys, batch, key
):
    argv = ["train", "--set", "data.train_subset=129", "--batch-size", batch]
    assert main([*argv, "--set", "train.steps=3", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "last batch of 1" in err and key in err and "data.train_subset=128" in err
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_the_packed_path_applies_the_same_rule(tmp_path):
    argv = ["sweep", "--elrs", "1e-3,1e-2", "--set", "data.train_subset=129"]
    assert main([*argv, "--set", "train.steps=3", "--out", str(tmp_path / "s")]) == 1
    rows = read_summary(tmp_path / "s" / "summary.csv")
    assert all("last batch of 1" in r["error"] for r in rows)


def test_the_named_fix_trains(tmp_path):
    argv = ["train", "--set", "data.train_subset=129", "--batch-size", "43"]
    argv += ["--set", "train.eval_batch_size=43", "--set", "train.steps=2"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 0


# -- item 9: small input checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--elr", "inf"], "finite"),
        (["--elr", "nan"], "finite"),
        (["--batch-size", "-3"], "must be >= 0"),
    ],
)
def test_bad_train_flags_exit_2(tmp_path, capsys, args, needle):
    assert main(["train", *args, "--out", str(tmp_path / "r")]) == 2
    assert needle in capsys.readouterr().err


def test_version_prints_the_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"spherelab {__version__}"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_sweep_shows_progress_inside_its_pack(tmp_path, capsys):
    argv = ["sweep", "--elrs", "1e-3,1e-2", "--set", "train.steps=3", *SMALL]
    assert main([*argv, "--no-report", "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert "pack of 2 runs:" in err and "(step 3/3)" in err  # plain lines: not a terminal


def test_pack_progress_is_a_bar_on_a_terminal_and_throttled_lines_elsewhere():
    info = {"step": 1, "total": 4, "epoch": 1.0, "elapsed": 1.0}
    info |= {"record": {"train_loss": 1.0, "test_acc": 0.5}, "records": [{}, {}, {}]}
    term, plain = _Terminal(), io.StringIO()
    for stream in (term, plain):
        show = pack_progress(stream)
        for step in (1, 2, 3, 4):
            show({**info, "step": step})
    assert term.getvalue().count("\r[") == 4 and "pack of 3 runs" in term.getvalue()
    assert plain.getvalue().count("\n") == 2  # the first call and the last step


# -- item 10: the determinism switch ------------------------------------------------------------

# A chaotic ELR (regime 2) in float32: reduction order differences grow to visible ones.
CHAOTIC = ["--set", "train.steps=40", "--set", "model.width=64", "--set", "data.train_subset=512"]
CHAOTIC += ["--set", "train.records=5"]


def _sweep_records(out, executor, *flags):
    argv = ["sweep", "--elrs", "1e-3,1e-2", *CHAOTIC, "--executor", executor, *flags]
    assert main([*argv, "--no-report", "--out", str(out)]) == 0
    return (out / "runs" / "elr_1e-02__seed_0" / "metrics.jsonl").read_text()


def _train_records(out, *flags):
    argv = ["train", "--elr", "1e-2", *CHAOTIC, *flags, "--out", str(out)]
    assert main(argv) == 0
    return (out / "metrics.jsonl").read_text()


def test_deterministic_runs_are_never_packed_and_restore_the_thread_count():
    cfg = Config().with_overrides({"train.deterministic": True})
    assert can_pack([Config(), Config()]) and not can_pack([cfg, cfg])
    threads = torch.get_num_threads()
    with deterministic_mode(True):
        assert torch.get_num_threads() == DETERMINISTIC_THREADS
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()


def test_deterministic_gives_the_same_numbers_inline_packed_and_local(tmp_path):
    # Without the switch the chaotic run differs between a pack and a single run...
    packed = _sweep_records(tmp_path / "p", "inline", "--pack", "2")
    assert packed != _train_records(tmp_path / "t")
    # ...with it, a single run at 2 threads, a sweep asked to pack and the local executor
    # (its own thread count per worker) write the same bytes.
    torch.set_num_threads(2)  # the autouse fixture restores the count
    same = _train_records(tmp_path / "td", "--deterministic")
    assert same == _sweep_records(tmp_path / "pd", "inline", "--pack", "2", "--deterministic")
    assert same == _sweep_records(tmp_path / "ld", "local", "--deterministic")


def test_relabel_of_a_sweep_with_a_damaged_summary_csv_exits_2_with_the_fix(tmp_path, capsys):
    sweep = tmp_path / "s"
    sweep.mkdir()
    (sweep / "summary.csv").write_text("elr,seed,regime,status,run_dir\n0.01,0,conver\n")
    assert main(["report", str(sweep), "--relabel"]) == 2
    err = capsys.readouterr().err
    assert "summary.csv is damaged: line 2" in err and "rerun its sweep command" in err
