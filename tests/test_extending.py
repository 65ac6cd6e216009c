"""The claims of docs/extending.md: one function defines the metrics, hooks see every record."""

import re
from pathlib import Path

import pytest

from spherelab.config import Config, apply_overrides
from spherelab.io import read_jsonl
from spherelab.train import train_ensemble, train_run
from spherelab.train.recorder import METRIC_KEYS, Recorder

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _cfg(**over) -> Config:
    base = {
        "model.name": "mlp_si",
        "model.width": 8,
        "data.name": "synthetic:20:128",
        "data.batch_size": 32,
        "train.epochs": 2,
        "train.records": 3,
        "train.device": "cpu",
        "train.dtype": "float64",
    }
    return apply_overrides(Config(), base | over)


def test_a_metric_added_in_measure_reaches_rows_and_summaries_of_runs_and_packs(
    tmp_path, monkeypatch
):
    measure = Recorder.measure

    def with_gap(self):  # the one edit: a new entry in the dict measure returns
        metrics = measure(self)
        metrics["gen_gap"] = metrics["test_loss"] - metrics["train_loss"]
        return metrics

    monkeypatch.setattr(Recorder, "measure", with_gap)
    single = train_run(_cfg(), tmp_path / "single")
    packed = train_ensemble(
        [_cfg(**{"optim.elr": e, "train.seed": s}) for s, e in enumerate((1e-3, 1e-2))],
        [tmp_path / "a", tmp_path / "b"],
    )
    for summary, run in ((single, "single"), (packed[0], "a"), (packed[1], "b")):
        rows = read_jsonl(tmp_path / run / "metrics.jsonl")
        for row in rows:
            assert row["gen_gap"] == pytest.approx(row["test_loss"] - row["train_loss"])
            assert set(METRIC_KEYS) <= set(row)
        assert summary["gen_gap"] == rows[-1]["gen_gap"]


def test_the_rows_keys_are_measures_keys_between_step_and_lr(tmp_path):
    train_run(_cfg(), tmp_path / "r")
    row = read_jsonl(tmp_path / "r" / "metrics.jsonl")[0]
    keys = list(row)
    measured = keys[keys.index("step") + 1 : keys.index("lr")]
    assert keys[:2] == ["epoch", "step"] and keys[-4:] == ["lr", "elr", "layer_norms", "layer_elr"]
    assert "train_loss" in measured and "angle_to_init" in measured


def test_the_hook_example_runs_and_sees_every_record(tmp_path, monkeypatch, capsys):
    block = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block, "docs/extending.md lost its hook example"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), str(DOC), "exec"), scope)
    records = read_jsonl(tmp_path / "hook_demo" / "metrics.jsonl")
    assert [s for s, _ in scope["seen"]] == [r["step"] for r in records]
    assert capsys.readouterr().out.split() == [str(records[0]["step"]), str(records[-1]["step"])]


def test_a_hook_is_called_once_per_member_and_record(tmp_path):
    events = []
    cfgs = [_cfg(**{"optim.elr": e, "train.seed": s}) for s, e in enumerate((1e-3, 1e-2))]
    train_ensemble(cfgs, [tmp_path / "a", tmp_path / "b"], hooks=[events.append])
    for k, out in enumerate(("a", "b")):
        rows = read_jsonl(tmp_path / out / "metrics.jsonl")
        mine = [e for e in events if e.member == k]
        assert [e.row for e in mine] == rows and [e.index for e in mine] == list(range(len(rows)))
        assert all(e.out == tmp_path / out for e in mine)
