"""The worked example of docs/your_model.md runs as written: a transformers ResNet from its config
to a regime map (`spherelab sweep --model module:factory`) and a monitored conventional run over
that map, then the regime lens."""

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from spherelab.cli import main

pytest.importorskip("transformers")

DOC = Path(__file__).resolve().parents[1] / "docs" / "your_model.md"


def _blocks(kind: str) -> list[str]:
    section = DOC.read_text().split("## Your training loop", 1)[1]
    return re.findall(rf"```{kind}\n(.*?)```", section, re.S)


def test_the_worked_example_goes_from_config_to_a_map_and_a_monitored_run(
    tmp_path, monkeypatch, capsys
):
    factory, loop = _blocks("python")
    (command,) = _blocks("bash")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_nets.py").write_text(factory)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_nets", raising=False)

    argv = shlex.split(command)
    assert argv[0] == "spherelab" and main(argv[1:]) == 0
    rows = (tmp_path / "out/resnet_map/summary.csv").read_text().splitlines()
    assert len(rows) == 4 and all(",finished," in row for row in rows[1:])

    exec(compile(loop, str(DOC), "exec"), {})
    printed = capsys.readouterr().out
    assert printed.count("map regime") == 4
    run = tmp_path / "out/resnet_sgd"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["elr_effective"] > 0
    assert main(["report", "out/resnet_map", "--lens", "out/resnet_sgd"]) == 0
    assert (run / "lens" / "lens.html").is_file()
