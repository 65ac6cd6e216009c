"""The README's library example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_library_example_runs(capsys):
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Library example\s+```python\n(.*?)```", text, re.S)
    assert block, "README lost its library example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 20
    exec(compile(code, "README.md", "exec"), {})
    assert "train loss" in capsys.readouterr().out


def test_readme_names_the_two_commands_and_the_makefile_has_them():
    text = README.read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    makefile = (README.parent / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_the_ensemble_guide_example_runs(tmp_path, monkeypatch):
    text = (README.parent / "docs" / "ensemble.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block, "docs/ensemble.md lost its Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block.group(1), "docs/ensemble.md", "exec"), namespace)
    assert [s["status"] for s in namespace["summaries"]] == ["finished", "finished"]
    assert (tmp_path / "runs" / "b" / "metrics.jsonl").is_file()
